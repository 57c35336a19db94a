"""registry-cache installed like any package (``pip install .``), used from a directory that is not the checkout.

The wheel is built from this checkout and installed into a fresh venv that sees the test environment's
packages (its dependencies, through a .pth file, also when the tests run in a virtualenv) but not the checkout: ``registry-cache render`` and ``registry-cache local-up`` run
from a temporary directory and find their templates, CRDs, example and build scripts in the package.
The wheel the Dockerfile builds (only pyproject.toml, README.md, api/ and extension/ in its context) is built
the same way without Docker, and holds only what runs.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _wheel(source: Path, out: Path) -> Path:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "--wheel-dir", str(out), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob("registry_cache-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A venv with the wheel installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("installed")
    wheel = _wheel(REPO, root / "dist")
    env_dir = root / "venv"
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # the test environment's packages (the dependencies) behind the venv's own, wherever the tests run: in a
    # virtualenv, system_site_packages would mean the base interpreter's instead. A path in a .pth file is not
    # a site directory, so its own .pth files (this checkout's editable install) are not read: the checkout
    # stays out of sight
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=60).stdout.strip()
    Path(own, "_test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    where = subprocess.run([str(python), "-c", "import extension; print(extension.__file__)"], cwd=root,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(env_dir)), f"the package comes from {where.stdout.strip()}, not the venv"
    return env_dir / "bin"


def test_render_from_anywhere(installed, tmp_path):
    for name in ("shoot.yaml", "quay-credentials-v1.yaml"):
        shutil.copy(REPO / "examples" / name, tmp_path / name)
    done = subprocess.run([str(installed / "registry-cache"), "render", "shoot.yaml", "--secret",
                           "quay-credentials-v1.yaml", "-o", "out", "--endpoint", "docker.io=https://10.4.0.12:5000"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    hosts = (tmp_path / "out" / "nodes" / "docker.io" / "hosts.toml").read_text()
    assert '[host."https://10.4.0.12:5000"]' in hosts
    kinds = [yaml.safe_load(p.read_text())["kind"] for p in sorted((tmp_path / "out" / "shoot").glob("*.yaml"))]
    assert kinds.count("StatefulSet") == 4


def test_local_up_from_anywhere(installed, control_plane_bin_dir, tmp_path):
    done = subprocess.run([str(installed / "registry-cache"), "local-up", "--no-node", "--no-wait", "--workdir", "lu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Create Succeeded" in done.stdout, done.stdout[-3000:]
    assert "/etc/containerd/certs.d/docker.io/hosts.toml:" in done.stdout


def test_the_image_wheel_holds_only_what_runs(tmp_path):
    """What the Dockerfile's build stage does: pyproject.toml, README.md, api/, extension/, and the folders the
    package maps in (see pyproject.toml) empty."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, context / name)
    for name in ("api", "extension"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__"))
    dockerfile = (REPO / "Dockerfile").read_text()
    mkdir = next(line for line in dockerfile.splitlines() if "mkdir -p " in line)  # (in the build stage's RUN)
    subprocess.run("mkdir -p " + mkdir.split("mkdir -p ", 1)[1].split("&&")[0].rstrip(" \\"), shell=True,
                   cwd=context, check=True)
    wheel = _wheel(context, tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert "extension/component/templates/statefulset.yaml.j2" in names
    assert not [n for n in names if n.startswith(("extension/local/hack/", "extension/local/crds/",
                                                  "extension/local/examples/"))]
