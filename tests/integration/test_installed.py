"""registry-cache installed like any package, used from a directory that is not the checkout.

Two distributions are built from (a copy of) this checkout: ``registry-cache`` (the product: pyproject.toml) and
``registry-cache-local`` (local-up and what it needs: local/pyproject.toml), which ``pip install
'registry-cache[local]'`` adds. Each venv sees the test environment's packages (the dependencies, through a .pth
file, also when the tests run in a virtualenv) but not the checkout. With both, ``registry-cache render`` and
``registry-cache local-up`` run from a temporary directory and find their templates, CRDs, chart, example and build
scripts in the packages; with the product alone local-up says what to install. The wheel the Dockerfile builds
(only what .dockerignore lets into its context) is built the same way without Docker, and holds only what runs.
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


IGNORED = shutil.ignore_patterns(".git", "__pycache__", "build", "dist", "*.egg-info", ".mypy_cache", ".ruff_cache",
                                 ".hypothesis", ".pytest_cache", ".registry-cache-local", "out")


def _wheel(source: Path, out: Path, name: str = "registry_cache") -> Path:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "--wheel-dir", str(out), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    [wheel] = out.glob(f"{name}-*.whl")
    return wheel


def _venv(root: Path, *wheels: Path) -> Path:
    """A venv with these wheels installed, seeing the test environment's packages; returns its bin directory."""
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
                           *map(str, wheels)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    where = subprocess.run([str(python), "-c", "import extension; print(extension.__file__)"], cwd=root,
                           capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(env_dir)), f"the package comes from {where.stdout.strip()}, not the venv"
    return env_dir / "bin"


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> tuple[Path, Path]:
    """(registry-cache, registry-cache-local), built from a copy of the checkout (no build/ left over from before)."""
    root = tmp_path_factory.mktemp("wheels")
    source = root / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=IGNORED)
    return _wheel(source, root / "dist"), _wheel(source / "local", root / "dist", "registry_cache_local")


@pytest.fixture(scope="module")
def installed(wheels, tmp_path_factory) -> Path:
    """``pip install 'registry-cache[local]'``: both distributions; returns the venv's bin directory."""
    return _venv(tmp_path_factory.mktemp("installed"), *wheels)


def test_the_local_extra_is_the_local_distribution(wheels):
    product, local = (zipfile.ZipFile(w) for w in wheels)
    metadata = product.read(next(n for n in product.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert 'Requires-Dist: registry-cache-local==0.1.0; extra == "local"' in metadata.splitlines()
    local_metadata = local.read(next(n for n in local.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert "Requires-Dist: registry-cache==0.1.0" in local_metadata.splitlines()
    assert not [n for n in product.namelist() if n.startswith("extension/local/")]
    # the local distribution: the package, the manifests (kustomize bases, CRDs, policies), the chart with the
    # files its links point at, the examples, the build scripts and Go wrapper modules; nothing of the product
    names = set(local.namelist())
    assert not [n for n in names if not n.startswith(("extension/local/", "registry_cache_local-"))]
    assert {"extension/local/up.py", "extension/local/manifests/default/kustomization.yaml",
            "extension/local/manifests/crds/10-crd-core.gardener.cloud_shoots.yaml",
            "extension/local/manifests/policies/shoots.yaml",
            "extension/local/manifests/seed-crds/10-crd-extensions.gardener.cloud_operatingsystemconfigs.yaml",
            "extension/local/chart/Chart.yaml", "extension/local/chart/files/guard.yaml",
            "extension/local/chart/files/crds/10-crd-core.gardener.cloud_shoots.yaml",
            "extension/local/examples/local-shoot.yaml", "extension/local/hack/control-plane-bins.sh",
            "extension/local/hack/lib/bincache.sh", "extension/local/hack/go/kube-apiserver/go.mod"} <= names
    assert local.read("extension/local/chart/files/guard.yaml") == (REPO / "manifests/controller/guard.yaml").read_bytes()


def test_without_the_local_parts_local_up_says_what_to_install(wheels, tmp_path):
    product_only = _venv(tmp_path, wheels[0])
    assert subprocess.run([str(product_only / "registry-cache"), "--help"], capture_output=True,
                          timeout=120).returncode == 0
    done = subprocess.run([str(product_only / "registry-cache"), "local-up", "--no-node", "--no-wait"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "pip install 'registry-cache[local]'" in done.stderr


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
    """What the Dockerfile's build stage does: its context is what .dockerignore lets through (pyproject.toml,
    README.md, constraints.txt, api/, extension/ without extension/local/). The wheel holds every module of api/
    and extension/ but the local parts (the cache Pod's front included: it runs from the product's image), and
    nothing else."""
    context = tmp_path / "context"
    context.mkdir()
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "!extension/" in ignore and "extension/local/" in ignore
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(REPO / name, context / name)
    for name in ("api", "extension"):
        shutil.copytree(REPO / name, context / name, ignore=shutil.ignore_patterns("__pycache__", "local"))
    wheel = _wheel(context, tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert "extension/component/templates/statefulset.yaml.j2" in names
    modules = {str(p.relative_to(REPO)) for pkg in ("api", "extension") for p in (REPO / pkg).rglob("*.py")
               if "__pycache__" not in p.parts and not p.is_relative_to(REPO / "extension" / "local")}
    assert {n for n in names if n.endswith(".py")} == modules
