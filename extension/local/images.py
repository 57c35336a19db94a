"""The local cluster's images, built here with crane (no Docker, nothing pulled from the internet).

- ``pause``: the sandbox image containerd starts for every Pod, the static ``pause`` program of
  ``hack/go/pause`` (built by ``hack/node-bins.sh``) as its entrypoint.
- ``registry``: the distribution registry the caches run, from the binary ``hack/registry-bins.sh`` builds
  (the version Gardener ships), laid out and started as the official ``registry:3`` image does it: the
  binary on ``PATH``, ``registry serve /etc/distribution/config.yml``, ``OTEL_TRACES_EXPORTER=none``,
  ``/var/lib/registry`` as its storage; ``/etc/ssl/certs/ca-certificates.crt`` holds the roots the image
  trusts (here the test CA of the local upstreams, as a public image holds the public roots); ``/bin/sh``
  and ``/bin/sleep`` as the official (Alpine) image has them, for the credential helper of a cache without
  credentials and the cache's preStop pause: a static busybox (Debian's ``busybox-static``) as ``/bin/busybox``,
  ``/bin/sh`` and ``/bin/sleep``.

Each image is one layer tarball made with :mod:`tarfile`, appended by ``crane append`` onto crane's empty
base, its config set with ``crane mutate`` (entrypoint, cmd, env, platform linux/amd64), and pushed to the
cluster's image registry.

- ``registry-cache``: the product itself, built from the repository's ``Dockerfile`` by ``hack/image.sh``
  (buildah, no Docker engine) into an OCI archive cached by the hash of its sources
  (:func:`product_archive`), and pushed with crane as ``<host>/registry-cache/registry-cache:<tag>``, the tag
  being the start of that hash (:func:`push_product`). The image needs the Dockerfile and its build context:
  it is built from a checkout (this package's own, when it runs from one, or ``source``/
  ``REGISTRY_CACHE_SOURCE``). An installed package carries ``hack/image.sh`` but no Dockerfile and no
  sources to build from: :func:`product_archive` then says so (:class:`ImageUnavailable`).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extension.local.assets import asset_dir
from extension.local.procs import ClusterError

PAUSE_REPOSITORY = "registry-cache/pause"
REGISTRY_REPOSITORY = "registry-cache/registry"
PRODUCT_REPOSITORY = "registry-cache/registry-cache"


@dataclass(frozen=True)
class Images:
    pause: str
    registry: str


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
    tar.addfile(info)


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = path.stat().st_size, mode, 0
    with open(path, "rb") as f:
        tar.addfile(info, f)


def pause_layer(path: Path, pause_bin: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        _add_file(tar, "pause", pause_bin)
    return path


BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))


def is_static_elf(path: Path) -> bool:
    """Whether ``path`` is an ELF executable without a program interpreter (PT_INTERP): it runs in an image
    that has no libc."""
    import struct

    try:
        data = path.read_bytes()
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    endian = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    return all(struct.unpack_from(endian + "I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def static_busybox() -> Path | None:
    """A statically linked busybox of this machine (Debian's ``busybox-static``), if there is one."""
    return next((p for p in BUSYBOX_PATHS if is_static_elf(p)), None)


def registry_layer(path: Path, registry_bin: Path, ca_bundle_pem: str, busybox_bin: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "etc/distribution", "etc/ssl", "etc/ssl/certs", "var", "var/lib"):
            _add_dir(tar, d)
        _add_dir(tar, "tmp", 0o1777)
        _add_dir(tar, "var/lib/registry", 0o755)
        _add_file(tar, "bin/registry", registry_bin)
        _add_file(tar, "bin/busybox", busybox_bin)
        for applet in ("sh", "sleep"):  # the credential helper's shell, the cache's preStop pause
            _add_symlink(tar, f"bin/{applet}", "busybox")
        _add_bytes(tar, "etc/ssl/certs/ca-certificates.crt", ca_bundle_pem.encode())
        # what a container without a user database needs for user 65532 (distroless' "nonroot")
        _add_bytes(tar, "etc/passwd", b"root:x:0:0:root:/root:/sbin/nologin\n"
                                      b"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
        _add_bytes(tar, "etc/group", b"root:x:0:\nnonroot:x:65532:\n")
    return path


def build_and_push(crane: Callable[[list[str]], str], workdir: Path, registry_host: str, *,
                   pause_bin: Path, registry_bin: Path, registry_tag: str, ca_bundle_pem: str,
                   busybox_bin: Path) -> Images:
    """Build both images into ``registry_host`` (plain HTTP). ``crane(args)`` runs crane where it reaches the
    registry and returns its stdout (raises on failure)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pause = f"{registry_host}/{PAUSE_REPOSITORY}:local"
    registry = f"{registry_host}/{REGISTRY_REPOSITORY}:{registry_tag}"
    crane(["append", "--insecure", "-f", str(pause_layer(workdir / "pause.tar", pause_bin)), "-t", pause])
    crane(["mutate", "--insecure", pause, "--entrypoint", "/pause", "--set-platform", "linux/amd64", "-t", pause])
    layer = registry_layer(workdir / "registry.tar", registry_bin, ca_bundle_pem, busybox_bin)
    crane(["append", "--insecure", "-f", str(layer), "-t", registry])
    crane(["mutate", "--insecure", registry, "--entrypoint", "registry", "--cmd", "serve,/etc/distribution/config.yml",
           "--env", "PATH=/bin", "--env", "OTEL_TRACES_EXPORTER=none", "--exposed-ports", "5000/tcp",
           "--set-platform", "linux/amd64", "-t", registry])
    for ref in (pause, registry):
        config = json.loads(crane(["config", "--insecure", ref]))
        if config.get("os") != "linux" or not config.get("config", {}).get("Entrypoint"):
            raise ClusterError(f"image {ref} was not built as meant: {config}")
    return Images(pause=pause, registry=registry)


# --- a credential provider plugin's image (for the scenarios of short-lived upstream credentials) -------------

PLUGIN_REPOSITORY = "registry-cache/test-credential-provider"


def plugin_layer(path: Path, plugin_bin: Path, busybox_bin: Path) -> Path:
    """What a user's plugin image holds for the cache Pod's init container: the plugin at ``/bin/<name>`` and a
    ``cp`` (a static busybox, ``/bin/cp`` linking to it)."""
    with tarfile.open(path, "w") as tar:
        _add_dir(tar, "bin")
        _add_file(tar, f"bin/{plugin_bin.name}", plugin_bin)
        _add_file(tar, "bin/busybox", busybox_bin)
        _add_symlink(tar, "bin/cp", "busybox")
    return path


def push_plugin_image(crane: Callable[[list[str]], str], workdir: Path, registry_host: str, plugin_bin: Path,
                      busybox_bin: Path) -> str:
    """Build the plugin's image into ``registry_host`` (plain HTTP), tagged by the plugin's hash; its reference."""
    import hashlib

    workdir.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(plugin_bin.read_bytes()).hexdigest()[:12]
    ref = f"{registry_host}/{PLUGIN_REPOSITORY}:{tag}"
    crane(["append", "--insecure", "-f", str(plugin_layer(workdir / "plugin.tar", plugin_bin, busybox_bin)), "-t", ref])
    crane(["mutate", "--insecure", ref, "--env", "PATH=/bin", "--entrypoint", f"/bin/{plugin_bin.name}",
           "--set-platform", "linux/amd64", "-t", ref])
    return ref


# --- the product image ------------------------------------------------------------------------------------

class ImageUnavailable(ClusterError):
    """The product image cannot be built here: no checkout to build from, or no buildah and no way to get it."""


@dataclass(frozen=True)
class ProductImage:
    archive: Path  # the OCI archive hack/image.sh wrote
    reference: str  # <host>/registry-cache/registry-cache:<tag>
    by_digest: str  # <host>/registry-cache/registry-cache@sha256:...
    digest: str  # sha256:... of the image manifest


_ARCHIVE_NAME = re.compile(r"registry-cache-([0-9a-f]{64})\.tar")


def checkout_root() -> Path | None:
    """The checkout this package runs from (a source tree with the Dockerfile), or None when installed."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "Dockerfile").is_file() and (root / ".dockerignore").is_file() else None


def image_unavailable() -> str | None:
    """Why :func:`product_archive` cannot build the image here (None: it can try): no checkout to build from, or
    neither buildah nor root with apt-get to install it (what ``hack/image.sh`` exits 3 for)."""
    env_source = os.environ.get("REGISTRY_CACHE_SOURCE")
    root = (Path(env_source) if env_source else None) or checkout_root()
    if root is None or not (root / "Dockerfile").is_file():
        return "it is built from a checkout of the repository (its Dockerfile and sources), which an installed " \
               "package does not carry; set REGISTRY_CACHE_SOURCE=/path/to/checkout"
    if os.geteuid() != 0:
        return "buildah builds it as root here"
    if shutil.which("buildah") is None and shutil.which("apt-get") is None:
        return "neither buildah nor apt-get to install it"
    return None


def product_archive(progress: Callable[[str], None] | None = None, *, source: Path | None = None) -> Path:
    """Run ``hack/image.sh`` (built once per state of the sources, then cached) and return the OCI archive.

    ``source`` is the checkout to build; by default ``REGISTRY_CACHE_SOURCE``, else the checkout this
    package runs from. ``progress`` receives the script's stderr lines as they come (a first build takes a
    few minutes). Raises :class:`ImageUnavailable` when there is no checkout or no buildah can be had,
    :class:`ClusterError` with the tail of the script's output when the build fails.
    """
    env_source = os.environ.get("REGISTRY_CACHE_SOURCE")
    root = source or (Path(env_source) if env_source else None) or checkout_root()
    if root is None or not (root / "Dockerfile").is_file():
        raise ImageUnavailable(
            "the registry-cache image is built from a checkout of the repository (the Dockerfile and its build "
            "context: pyproject.toml, README.md, constraints.txt, api/, extension/), which an installed package "
            "does not carry: run from a checkout, or set REGISTRY_CACHE_SOURCE=/path/to/checkout")
    script = asset_dir("hack") / "image.sh"
    if shutil.which("bash") is None or not script.is_file():
        raise ImageUnavailable(f"bash and {script} are needed to build the image")
    env = {**os.environ, "REGISTRY_CACHE_SOURCE": str(root)}
    proc = subprocess.Popen(["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    err: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line.rstrip("\n"))
            if progress is not None:
                progress(line.rstrip("\n"))

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    out = proc.stdout.read() if proc.stdout else ""
    rc = proc.wait()
    t.join()
    tail = "\n".join(err[-20:])
    if rc == 3:  # the script's "cannot be had here"
        raise ImageUnavailable(f"hack/image.sh cannot build the image here:\n{tail}")
    if rc != 0:
        raise ClusterError(f"hack/image.sh failed ({rc}):\n{tail}")
    lines = out.strip().splitlines()
    archive = Path(lines[-1]) if lines else None
    if archive is None or not archive.is_file() or not _ARCHIVE_NAME.fullmatch(archive.name):
        raise ClusterError(f"hack/image.sh printed no archive ({out!r}):\n{tail}")
    return archive


def archive_tag(archive: Path) -> str:
    """The tag of an archive's image: the first 16 hex digits of the hash of its sources (its name)."""
    match = _ARCHIVE_NAME.fullmatch(archive.name)
    if not match:
        raise ClusterError(f"{archive} is not named as hack/image.sh names its archives")
    return match.group(1)[:16]


def archive_manifest(archive: Path) -> tuple[str, dict]:
    """The digest and the manifest of the one image in an OCI archive."""
    with tarfile.open(archive) as tar:
        def read(name: str) -> bytes:
            f = tar.extractfile(name)
            if f is None:
                raise ClusterError(f"{archive}: {name} is not a file")
            return f.read()

        index = json.loads(read("index.json"))
        manifests = index.get("manifests", [])
        if len(manifests) != 1:
            raise ClusterError(f"{archive}: expected one image in index.json, found {len(manifests)}")
        digest = manifests[0]["digest"]
        return digest, json.loads(read("blobs/" + digest.replace(":", "/", 1)))


def _unpack_layout(archive: Path, dest: Path) -> Path:
    """The OCI archive as an OCI image layout directory (what ``crane push`` reads); unpacked once."""
    if (dest / "index.json").is_file():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if name.is_absolute() or ".." in name.parts or not (member.isfile() or member.isdir()):
                raise ClusterError(f"{archive}: unexpected member {member.name!r} in an OCI archive")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(tmp, filter="data")
        else:
            tar.extractall(tmp)  # checked above: files and directories inside tmp only
    tmp.rename(dest)
    return dest


def push_product(crane: Callable[[list[str]], str], registry_host: str, workdir: Path, *,
                 archive: Path | None = None, progress: Callable[[str], None] | None = None,
                 insecure: bool = True) -> ProductImage:
    """Ensure the product image's archive (:func:`product_archive`) and push it to ``registry_host`` as
    ``<host>/registry-cache/registry-cache:<tag>``. ``crane(args)`` runs crane where it reaches the registry
    and returns its stdout (raises on failure); ``insecure``: the registry speaks plain HTTP. The image is
    pushed as built (the same manifest digest as in the archive, checked)."""
    archive = archive or product_archive(progress)
    digest, _ = archive_manifest(archive)
    tag = archive_tag(archive)
    workdir.mkdir(parents=True, exist_ok=True)
    layout = _unpack_layout(archive, workdir / f"registry-cache-oci-{tag}")
    reference = f"{registry_host}/{PRODUCT_REPOSITORY}:{tag}"
    out = crane(["push", *(["--insecure"] if insecure else []), str(layout), reference])
    pushed = out.strip().splitlines()[-1] if out.strip() else ""
    by_digest = f"{registry_host}/{PRODUCT_REPOSITORY}@{digest}"
    if pushed != by_digest:
        raise ClusterError(f"crane pushed {reference} as {pushed!r}, the archive holds {digest}")
    return ProductImage(archive=archive, reference=reference, by_digest=by_digest, digest=digest)
