"""Fixtures for tests against a real local control plane (etcd + kube-apiserver processes).

``control_plane``        the "seed": one LocalControlPlane for the whole session, with manifests/crds applied
                         and established, and the admission policies of manifests/policies.
``second_control_plane`` a second, independent LocalControlPlane (the "shoot is another cluster" case);
                         started only when a test asks for it; no CRDs.
``api_client``           a kubernetes ApiClient (admin) for ``control_plane``.
``kubeconfig``           the path of ``control_plane``'s kubeconfig.
``helm``                 the path of a helm binary (hack/helm-bin.sh builds it with Go; skipped without Go).

The binaries come from hack/control-plane-bins.sh ($KUBEBUILDER_ASSETS, the build cache, or a Go build).
Without any of them the tests are skipped with the reason; a failing build fails them with the build log
tail. Work directories live under pytest's basetemp, so the process logs (etcd.log, kube-apiserver.log) of
the last runs stay available; the etcd data is removed at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from extension.local.controlplane import (
    BinariesBuildError,
    BinariesUnavailable,
    ControlPlaneError,
    LocalControlPlane,
    apply_manifests,
    load_manifests,
    resolve_bin_dir,
    wait_for_crds_established,
)

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "manifests" / "crds"
POLICY_DIR = REPO / "manifests" / "policies"  # standalone mode's admission policies for Shoots

# name -> {"start": s, "crds": s, "stop": s}, reported in the terminal summary
_TIMINGS: dict[str, dict[str, float]] = {}


def crd_names() -> list[str]:
    return [o["metadata"]["name"] for o in load_manifests([CRD_DIR]) if o["kind"] == "CustomResourceDefinition"]


@pytest.fixture(scope="session")
def control_plane_bin_dir() -> Path:
    skip = failure = ""
    try:
        return resolve_bin_dir()
    except BinariesUnavailable as e:
        skip = f"no kube-apiserver/etcd: {e}"
    except BinariesBuildError as e:
        failure = f"building kube-apiserver/etcd failed: {e}"
    # (outside the except blocks, so that the report does not repeat the message as a chained exception)
    if skip:
        pytest.skip(skip)
    pytest.fail(failure, pytrace=False)


def _start(name: str, bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LocalControlPlane:
    workdir = tmp_path_factory.mktemp(f"control-plane-{name}")
    cp = LocalControlPlane(workdir=workdir, bin_dir=bin_dir, name=name)
    try:
        cp.start()
    except ControlPlaneError as e:
        failure = f"the {name} control plane did not start: {e}"
    else:
        _TIMINGS.setdefault(name, {})["start"] = cp.start_seconds or 0.0
        return cp
    pytest.fail(failure, pytrace=False)


def _stop(cp: LocalControlPlane) -> None:
    cp.stop()
    _TIMINGS.setdefault(cp.name, {})["stop"] = cp.stop_seconds or 0.0
    if cp.workdir is not None:
        shutil.rmtree(cp.workdir / "etcd-data", ignore_errors=True)


@contextlib.contextmanager
def own_control_plane(name: str, bin_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                      policies: bool = False) -> Iterator[LocalControlPlane]:
    """A control plane of a module's own, with the CRDs (and the admission policies): request counts that no
    other test's objects add to."""
    from extension.local.controlplane import apply_manifests, wait_for_crds_established

    cp = _start(name, bin_dir, tmp_path_factory)
    try:
        api = cp.api_client()
        apply_manifests(api, [CRD_DIR])
        wait_for_crds_established(api, crd_names(), timeout=60)
        if policies:
            apply_manifests(api, [POLICY_DIR])
        yield cp
    finally:
        _stop(cp)


@pytest.fixture(scope="session")
def control_plane(control_plane_bin_dir, tmp_path_factory):
    cp = _start("seed", control_plane_bin_dir, tmp_path_factory)
    try:
        t0 = time.monotonic()
        api = cp.api_client()
        try:
            apply_manifests(api, [CRD_DIR])
            wait_for_crds_established(api, crd_names(), timeout=60)
            apply_manifests(api, [POLICY_DIR])
        finally:
            api.close()
        _TIMINGS["seed"]["crds"] = time.monotonic() - t0
        yield cp
    finally:
        _stop(cp)


@pytest.fixture(scope="session")
def second_control_plane(control_plane_bin_dir, tmp_path_factory):
    cp = _start("shoot", control_plane_bin_dir, tmp_path_factory)
    try:
        yield cp
    finally:
        _stop(cp)


def _go() -> str | None:
    """The Go toolchain hack/lib/bincache.sh would use."""
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    return go if os.access(go, os.X_OK) else None


@pytest.fixture(scope="session")
def helm() -> str:
    if _go() is None:
        pytest.skip("no Go toolchain (go on PATH, $GO or /usr/local/go/bin/go): hack/helm-bin.sh builds helm with it")
    done = subprocess.run(["bash", str(REPO / "hack" / "helm-bin.sh")], capture_output=True, check=False, text=True,
                          timeout=1800)
    if done.returncode != 0:
        pytest.fail("hack/helm-bin.sh failed:\n" + done.stderr[-3000:], pytrace=False)
    path = done.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


@pytest.fixture(scope="session")
def api_client(control_plane):
    api = control_plane.api_client()
    yield api
    api.close()


@pytest.fixture(scope="session")
def kubeconfig(control_plane) -> Path:
    return control_plane.kubeconfig


def pytest_terminal_summary(terminalreporter):
    if not _TIMINGS:
        return
    terminalreporter.section("local control planes")
    for name, t in _TIMINGS.items():
        parts = [f"{k} {v:.2f}s" for k, v in t.items()]
        terminalreporter.write_line(f"{name}: " + ", ".join(parts))
