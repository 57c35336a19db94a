"""Fixtures for the data-path e2e tests: real distribution registries, crane and containerd.

``tools``        session: the registry (distribution v3) and crane binaries from hack/registry-bins.sh
                 (built with the local Go toolchain on first use, ~2.5 minutes, then cached).
``containerd``   session: containerd and ctr on PATH, installed by hack/e2e-deps.sh (apt-get, as root)
                 when missing.
``ca``           session: the CA the controller would make (extension.component.certs.generate_ca).
``datapath``     function: a :class:`harness.DataPath` that starts upstreams, caches and containerds for
                 one test and stops every one of them at teardown.

What cannot be had skips with the reason (no Go toolchain, not root and no containerd, no bcrypt for the
upstream's htpasswd); a build or an install that fails is an error, not a skip. Work directories (configs,
access logs, registry and containerd logs) stay under pytest's basetemp for inspection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from extension.component.certs import generate_ca

from .dataplane import CONTAINERD_BINS, E2E_DEPS, REGISTRY_BINS, E2EError, Tools, bcrypt_hash
from .figures import CLUSTER_FIGURES, CLUSTER_TIMINGS, FIGURES
from .harness import DataPath

_TIMINGS: dict[str, float] = {}


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    if not shutil.which("go") and Path("/usr/local/go/bin/go").is_file():
        env["PATH"] = "/usr/local/go/bin:" + env.get("PATH", "")
    return env


@pytest.fixture(scope="session")
def tools() -> Tools:
    env = _go_env()
    t0 = time.monotonic()
    res = subprocess.run([str(REGISTRY_BINS)], capture_output=True, text=True, env=env, timeout=1800)
    _TIMINGS["hack/registry-bins.sh"] = time.monotonic() - t0
    if res.returncode != 0:
        tail = "\n".join(res.stderr.splitlines()[-20:])
        if "no Go toolchain found" in res.stderr:
            pytest.skip(f"the registry and crane are not built and there is no Go toolchain to build them "
                        f"(hack/registry-bins.sh): {tail}")
        pytest.fail(f"hack/registry-bins.sh failed ({res.returncode}):\n{tail}", pytrace=False)
    bin_dir = Path(res.stdout.strip().splitlines()[-1])
    try:
        bcrypt_hash("probe")
    except E2EError as e:
        pytest.skip(str(e))
    return Tools(registry=bin_dir / "registry", crane=bin_dir / "crane", bin_dir=bin_dir)


@pytest.fixture(scope="session")
def containerd() -> str:
    """Makes sure containerd and ctr are there; returns `containerd --version`."""
    if not (shutil.which("containerd") and shutil.which("ctr")):
        if os.geteuid() != 0:
            pytest.skip("containerd/ctr not found and not root: install the Debian package containerd "
                        "(hack/e2e-deps.sh as root)")
        res = subprocess.run([str(E2E_DEPS)], capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            pytest.skip("containerd/ctr not found and hack/e2e-deps.sh could not install them:\n"
                        + "\n".join(res.stderr.splitlines()[-15:]))
    if os.geteuid() != 0:
        pytest.skip("containerd runs as root in these tests (its own root, state and socket); not root")
    return subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="session")
def containerd2() -> Path:
    """containerd 2.x and its ctr, built from their Go module by hack/containerd-bins.sh (cached); the
    directory that holds them. Root, as for Debian's."""
    if os.geteuid() != 0:
        pytest.skip("containerd runs as root in these tests (its own root, state and socket); not root")
    t0 = time.monotonic()
    res = subprocess.run([str(CONTAINERD_BINS)], capture_output=True, text=True, env=_go_env(), timeout=1800)
    _TIMINGS["hack/containerd-bins.sh"] = time.monotonic() - t0
    if res.returncode != 0:
        tail = "\n".join(res.stderr.splitlines()[-20:])
        if "no Go toolchain found" in res.stderr:
            pytest.skip(f"containerd 2.x is not built and there is no Go toolchain to build it: {tail}")
        pytest.fail(f"hack/containerd-bins.sh failed ({res.returncode}):\n{tail}", pytrace=False)
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def ca():
    return generate_ca()


@pytest.fixture
def datapath(tools, ca, tmp_path):
    dp = DataPath(tools, tmp_path, ca)
    try:
        yield dp
    finally:
        dp.close()


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS or FIGURES:
        terminalreporter.section("data-path e2e")
        for name, seconds in _TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.2f}s")
        for line in FIGURES:
            terminalreporter.write_line(line)
    if CLUSTER_TIMINGS or CLUSTER_FIGURES:
        terminalreporter.section("node cluster e2e")
        for name, seconds in CLUSTER_TIMINGS.items():
            terminalreporter.write_line(f"{name}: {seconds:.1f}s")
        for line in CLUSTER_FIGURES:
            terminalreporter.write_line(line)
