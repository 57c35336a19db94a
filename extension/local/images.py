"""The local cluster's images, built here with crane (no Docker, nothing pulled from the internet).

- ``pause``: the sandbox image containerd starts for every Pod, the static ``pause`` program of
  ``hack/go/pause`` (built by ``hack/node-bins.sh``) as its entrypoint.
- ``registry``: the distribution registry the caches run, from the binary ``hack/registry-bins.sh`` builds
  (the version Gardener ships), laid out and started as the official ``registry:3`` image does it: the
  binary on ``PATH``, ``registry serve /etc/distribution/config.yml``, ``OTEL_TRACES_EXPORTER=none``,
  ``/var/lib/registry`` as its storage; ``/etc/ssl/certs/ca-certificates.crt`` holds the roots the image
  trusts (here the test CA of the local upstreams, as a public image holds the public roots); ``/bin/sh``
  as the official (Alpine) image has it, for the credential helper of a cache without credentials: a static
  busybox (Debian's ``busybox-static``) as ``/bin/busybox`` and ``/bin/sh``.

Each image is one layer tarball made with :mod:`tarfile`, appended by ``crane append`` onto crane's empty
base, its config set with ``crane mutate`` (entrypoint, cmd, env, platform linux/amd64), and pushed to the
cluster's image registry.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from extension.local.procs import ClusterError

PAUSE_REPOSITORY = "registry-cache/pause"
REGISTRY_REPOSITORY = "registry-cache/registry"


@dataclass(frozen=True)
class Images:
    pause: str
    registry: str


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 0
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
        sh = tarfile.TarInfo("bin/sh")
        sh.type, sh.linkname, sh.mode, sh.mtime = tarfile.SYMTYPE, "busybox", 0o777, 0
        tar.addfile(sh)
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
