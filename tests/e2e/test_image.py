"""The product image, built here without a Docker engine and looked into.

``hack/image.sh`` builds it from the repository's ``Dockerfile`` with buildah (the default base where it can be
pulled, else a Debian base built with mmdebstrap) into an OCI archive cached by the hash of its sources;
:func:`extension.local.images.product_archive` runs it. These tests unpack the archive's layers into a root
file system and check: the console script, the api/ and extension/ packages and Python are there; tests,
hack/, compilers, pip and its wheels are not; the entrypoint runs as user 65532; an unchanged source is not
built again (and a changed one is); the archive pushes to a registry as built (crane, the digest kept).
Figures (sizes, files, the biggest directories, times) go to the terminal summary.

Skips only where buildah cannot be had: not root, or no buildah and no apt-get to install it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from extension.local.images import (
    PRODUCT_REPOSITORY,
    ImageUnavailable,
    archive_manifest,
    archive_tag,
    product_archive,
    push_product,
)

from .dataplane import Upstream
from .figures import report

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "image.sh"
SITE = "opt/venv/lib/python3.11/site-packages"
# the context .dockerignore lets through, with the two files that describe the build
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "constraints.txt", "api", "extension")


@dataclass
class Image:
    archive: Path
    root: Path  # the layers applied in order
    digest: str
    config: dict
    entries: dict[str, tarfile.TarInfo] = field(default_factory=dict)  # path (no leading ./ or /) -> entry
    compressed: int = 0  # the layer blobs (gzip), as pushed
    uncompressed: int = 0  # the layer tars


def _norm(name: str) -> str:
    return name.removeprefix("./").strip("/")


def _unpack(archive: Path, root: Path) -> Image:
    """The archive's layers applied in order under ``root`` (as root: owners, modes and links as in the layers),
    and the resulting file list with the OCI whiteouts (``.wh.NAME``, ``.wh..wh..opq``) honoured."""
    digest, manifest = archive_manifest(archive)
    blobs = root.parent / "oci"
    blobs.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(blobs, members=[m for m in tar.getmembers() if m.isfile() and m.name.startswith("blobs/")])
    blob = lambda d: blobs / "blobs" / d.replace(":", "/", 1)
    image = Image(archive, root, digest, json.loads(blob(manifest["config"]["digest"]).read_bytes()))
    root.mkdir()
    for layer in manifest["layers"]:
        path = blob(layer["digest"])
        image.compressed += path.stat().st_size
        with gzip.open(path) as f:
            image.uncompressed += sum(len(chunk) for chunk in iter(lambda: f.read(1 << 20), b""))
        with tarfile.open(path, "r:gz") as tar:
            members = {_norm(m.name): m for m in tar.getmembers()}
        for name in [n for n in members if n.rsplit("/", 1)[-1].startswith(".wh.")]:
            del members[name]
            parent, _, base = name.rpartition("/")
            if base == ".wh..wh..opq":  # everything below parent from the layers beneath goes
                gone, below = [n for n in image.entries if n.startswith(parent + "/")], root / parent
                targets = list(below.iterdir()) if below.is_dir() else []
            else:
                target = f"{parent}/{base[4:]}" if parent else base[4:]
                gone = [n for n in image.entries if n == target or n.startswith(target + "/")]
                targets = [root / target]
            for n in gone:
                del image.entries[n]
            for t in targets:
                if t.is_dir() and not t.is_symlink():
                    shutil.rmtree(t)
                elif t.is_symlink() or t.exists():
                    t.unlink()
        image.entries.update(members)
        subprocess.run(["tar", "-xzf", str(path), "-C", str(root), "--numeric-owner", "--exclude=.wh.*"],
                       check=True, capture_output=True, timeout=300)
    return image


def _report_figures(image: Image) -> None:
    """The sizes, the number of files and the biggest directories, for docs/operations/deploying.md (terminal
    summary)."""
    files = {n: m.size for n, m in image.entries.items() if m.isfile()}
    dirs: dict[str, int] = {}
    for name, size in files.items():
        parts = name.split("/")
        for depth in range(1, len(parts)):
            key = "/".join(parts[:depth])
            dirs[key] = dirs.get(key, 0) + size
    mib = lambda n: f"{n / 2**20:.1f} MiB"
    report(f"image: {image.digest[:19]}, {len(image.config['rootfs']['diff_ids'])} layers, "
           f"{mib(image.compressed)} compressed, {mib(image.uncompressed)} uncompressed, "
           f"{len(files)} files ({mib(sum(files.values()))})")
    for depth in (2, 3):
        top = sorted(((s, d) for d, s in dirs.items() if d.count("/") == depth - 1), reverse=True)[:6]
        report(f"image: biggest at depth {depth}: " + ", ".join(f"/{d} {mib(s)}" for s, d in top))
    depth = SITE.count("/") + 1
    pkgs = sorted(((s, d) for d, s in dirs.items() if d.startswith(SITE + "/") and d.count("/") == depth),
                  reverse=True)[:8]
    report("image: biggest in the venv: " + ", ".join(f"{d.rsplit('/', 1)[1]} {mib(s)}" for s, d in pkgs))


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    if os.geteuid() != 0:
        pytest.skip("hack/image.sh runs buildah as root (storage driver vfs, --isolation chroot): not root")
    if not shutil.which("buildah") and not shutil.which("apt-get"):
        pytest.skip("buildah not found and no apt-get to install it (Debian package buildah)")
    t0 = time.monotonic()
    try:
        archive = product_archive()
    except ImageUnavailable as e:  # the script found something missing that the checks above did not
        pytest.fail(str(e), pytrace=False)
    report(f"image: hack/image.sh {time.monotonic() - t0:.1f}s -> {archive.name}")
    unpacked = _unpack(archive, tmp_path_factory.mktemp("image") / "rootfs")
    _report_figures(unpacked)
    return unpacked


def test_the_image_holds_what_runs(image):
    names = set(image.entries)
    assert "opt/venv/bin/registry-cache" in names
    assert image.entries["opt/venv/bin/registry-cache"].mode & 0o111
    assert {f"{SITE}/api/__init__.py", f"{SITE}/api/schema/registryconfig-v1alpha3.json",
            f"{SITE}/extension/cli/main.py", f"{SITE}/extension/controller/__init__.py",
            f"{SITE}/extension/nodeagent/__init__.py"} <= names
    assert any(t.endswith(".j2") for t in names if t.startswith(f"{SITE}/extension/component/templates/"))
    # every module of the two packages is there but the local parts (the distribution registry-cache-local), and
    # nothing else of the repository
    source = {str(p.relative_to(REPO)) for pkg in ("api", "extension") for p in (REPO / pkg).rglob("*.py")
              if "__pycache__" not in p.parts and not p.is_relative_to(REPO / "extension" / "local")}
    shipped = {n.removeprefix(SITE + "/") for n in names
               if re.match(rf"{SITE}/(api|extension)/", n) and n.endswith(".py")}
    assert shipped == source
    # Python itself, the interpreter the venv points at
    link = image.entries["opt/venv/bin/python3"]
    assert link.issym() and link.linkname in ("/usr/bin/python3", "/usr/local/bin/python3"), link.linkname
    assert _norm(link.linkname) in names
    assert any(re.fullmatch(r"usr(/local)?/bin/python3\.11", n) for n in names)
    config = image.config["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["registry-cache"] and config["Cmd"] == ["run"]
    assert next(e for e in config["Env"] if e.startswith("PATH=")).startswith("PATH=/opt/venv/bin:")
    assert image.config["os"] == "linux" and image.config["architecture"] == "amd64"


COMPILERS = {"gcc", "cc", "c++", "g++", "cpp", "clang", "go", "gofmt", "rustc", "cargo", "as", "ld", "make",
             "cc1", "cc1plus", "collect2"}


def test_the_image_leaves_out_what_does_not_run(image):
    names = set(image.entries)
    top = {n.split("/", 1)[0] for n in names}
    unexpected = top & {"src", "wheels", "tests", "hack", "manifests", "charts", "examples", "api", "extension"}
    assert not unexpected, unexpected
    # no tests of this project (anywhere), none of hack/ (not even as extension.local's package data)
    assert not [n for n in names if re.search(r"(^|/)tests/(unit|integration|e2e)(/|$)", n)]
    assert not [n for n in names if re.match(rf"{SITE}/(tests|hack|conftest)", n)]
    assert not [n for n in names if n.startswith(f"{SITE}/extension/local")]  # local-up: not the image's
    assert not [n for n in names if re.match(rf"{SITE}/(api|extension)/.*(test_|conftest)", n)]
    # no compilers, no Go
    found = [n for n, m in image.entries.items() if not m.isdir()
             and (n.rsplit("/", 1)[-1] in COMPILERS or re.search(r"(^|/)[\w-]*-(gcc|g\+\+)(-\d+)?$", n))]
    assert not found, found
    assert not [n for n in names if re.match(r"usr/(local/)?(lib/)?go(/|$)", n) or n.startswith("usr/lib/gcc/")]
    # pip is not in the venv, no pip cache, no wheels but the base's own (what its `python3 -m venv` installs)
    assert not [n for n in names if re.match(rf"(opt/venv/bin/pip|{SITE}/pip(/|-))", n)]
    assert not [n for n in names if ".cache/pip" in n or n.startswith("root/.cache")]
    wheels = [n for n in names if n.endswith(".whl")]
    assert all(re.match(r"usr/(share/python-wheels|(local/)?lib/python3\.11/ensurepip/_bundled)/", n)
               for n in wheels), wheels
    # the pip configuration and CA bundle the build stage was given as secrets are in no layer
    assert not {"etc/pip.conf", "etc/pip-ca.crt"} & names


def test_the_entrypoint_runs_as_65532(image):
    env = dict(e.split("=", 1) for e in image.config["config"]["Env"])
    user = "--userspec=" + image.config["config"]["User"]
    [entrypoint] = image.config["config"]["Entrypoint"]

    def inside(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", user, str(image.root), *argv], env=env, capture_output=True, text=True,
                              timeout=120)

    done = inside(entrypoint, "--help")  # found through the image's PATH, as a container runtime does
    assert done.returncode == 0, done.stderr
    assert "node-agent" in done.stdout and "run" in done.stdout, done.stdout
    done = inside("python3", "-c", "import os; print(os.getuid(), os.getgid())")
    assert done.returncode == 0 and done.stdout.split() == ["65532", "65532"], done.stdout + done.stderr
    # every module of api and extension imports with what the image holds (nothing missing: no pip, no
    # setuptools, none of the test extras); `python -m extension.cli` would run the command line
    done = inside("python3", "-c", "import importlib, pkgutil, api, extension\n"
                  "for p in (api, extension):\n"
                  "    for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.'):\n"
                  "        if not m.name.endswith('.__main__'):\n"
                  "            importlib.import_module(m.name)\n"
                  "print('imported')")
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-3000:]


def _run_script(env_extra: dict[str, str], path_first: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, **env_extra, "PATH": f"{path_first}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    t0 = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    return done, time.monotonic() - t0


def _copy_context(dest: Path) -> Path:
    dest.mkdir()
    for name in CONTEXT:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True)
        else:
            shutil.copy2(src, dest / name)
    return dest


def test_an_unchanged_source_is_not_built_again(image, tmp_path):
    # a buildah first on PATH that only says it was called
    spy = tmp_path / "spy"
    spy.mkdir()
    called = tmp_path / "buildah-called"
    (spy / "buildah").write_text(f"#!/bin/sh\necho \"$@\" >> {called}\nexit 1\n")
    (spy / "buildah").chmod(0o755)

    done, took = _run_script({}, spy)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(image.archive)
    assert not called.exists()
    report(f"image: cached call {took:.2f}s (no buildah)")
    assert took < 10

    # what .dockerignore leaves out of the context does not count: tests, hack, byte code, egg-info
    copy = _copy_context(tmp_path / "copy")
    (copy / "tests").mkdir()
    (copy / "tests" / "test_new.py").write_text("assert True\n")
    (copy / "extension" / "__pycache__").mkdir(exist_ok=True)
    (copy / "extension" / "__pycache__" / "new.cpython-311.pyc").write_bytes(b"\0")
    (copy / "extension" / "registry_cache.egg-info").mkdir()
    (copy / "extension" / "registry_cache.egg-info" / "PKG-INFO").write_text("Name: registry-cache\n")
    (copy / "hack").mkdir()
    (copy / "hack" / "new.sh").write_text("true\n")
    done, _ = _run_script({"REGISTRY_CACHE_SOURCE": str(copy)}, spy)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(image.archive)
    assert not called.exists()

    # a change in the context is a new image: the script goes to buildah (which here refuses; asked to pull
    # the default base it stops there, before any other work)
    with open(copy / "extension" / "__init__.py", "a") as f:
        f.write("# changed\n")
    done, _ = _run_script({"REGISTRY_CACHE_SOURCE": str(copy), "REGISTRY_CACHE_IMAGE_BASE": "pull"}, spy)
    assert done.returncode != 0
    assert called.exists(), done.stderr


def test_the_archive_pushes_as_built(image, tools, tmp_path):
    registry = Upstream(tools.registry, tmp_path / "registry", {}).start()
    try:
        def crane(args: list[str]) -> str:
            done = subprocess.run([str(tools.crane), *args], capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker")})
            assert done.returncode == 0, done.stderr
            return done.stdout

        t0 = time.monotonic()
        pushed = push_product(crane, registry.host, tmp_path / "push", archive=image.archive)
        report(f"image: pushed to a local registry in {time.monotonic() - t0:.1f}s")
        tag = archive_tag(image.archive)
        assert pushed.reference == f"{registry.host}/{PRODUCT_REPOSITORY}:{tag}"
        assert pushed.digest == image.digest
        assert pushed.by_digest == f"{registry.host}/{PRODUCT_REPOSITORY}@{image.digest}"
        assert crane(["digest", "--insecure", pushed.reference]).strip() == image.digest
        assert json.loads(crane(["config", "--insecure", pushed.by_digest]))["config"]["User"] == "65532:65532"
    finally:
        registry.stop()
