"""Credential files users keep outside Kubernetes, reduced to the entries of :mod:`api.credentials`.

Pure readers taking bytes (:mod:`extension.cli.credentials` does the I/O): an rkt ``auth.d`` JSON file, a
Mesos ``.tar.gz`` of ``.docker/config.json`` (read in memory, never extracted), and ``--username`` with a
password from stdin. Docker's ``config.json`` and ``.dockercfg`` are read by :mod:`api.credentials`, since
Secrets hold the same documents.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from typing import Any

from api.credentials import (
    MAX_DOCUMENT_BYTES,
    REGISTRY_TOKEN_DETAIL,
    CredentialsError,
    RegistryCredentials,
    RegistryEntry,
    load_json,
    read_docker_config,
)
from api.secrets import Credentials

MESOS_CONFIG_MEMBER = ".docker/config.json"
MAX_ARCHIVE_UNPACKED_BYTES = 64 << 20  # what a Mesos archive may decompress to before we give up
MAX_ARCHIVE_MEMBERS = 10_000


# --- rkt auth.d --------------------------------------------------------------------------------------
def read_rkt_auth(data: bytes) -> RegistryCredentials:
    """An rkt ``/etc/rkt/auth.d/*.json`` file: ``rktKind`` ``auth`` (``domains``, ``type`` ``basic``) or
    ``dockerAuth`` (``registries``), with ``credentials.user`` and ``credentials.password``."""
    doc = load_json(data, "the document")
    if not isinstance(doc, dict):
        raise CredentialsError("the document must be a JSON object")
    kind, version = doc.get("rktKind"), doc.get("rktVersion")
    if kind not in ("auth", "dockerAuth"):
        raise CredentialsError('"rktKind" must be "auth" or "dockerAuth"')
    if version != "v1":
        raise CredentialsError('"rktVersion" must be "v1"')
    list_key = "domains" if kind == "auth" else "registries"
    registries = doc.get(list_key)
    if not isinstance(registries, list) or not registries or not all(isinstance(r, str) and r for r in registries):
        raise CredentialsError(f'"{list_key}" must be a non-empty list of registry names')
    creds = doc.get("credentials")
    if not isinstance(creds, dict):
        raise CredentialsError('"credentials" must be a JSON object')
    if kind == "auth" and doc.get("type") != "basic":
        if doc.get("type") == "oauth":
            raise CredentialsError(f'"credentials.token" (type "oauth") {REGISTRY_TOKEN_DETAIL}')
        raise CredentialsError('"type" must be "basic" (or "oauth", which the cache cannot use)')
    for name in ("user", "password"):
        if not isinstance(creds.get(name), str):
            raise CredentialsError(f'"credentials.{name}" must be a string')
    credentials = Credentials(creds["user"], creds["password"])
    return RegistryCredentials(tuple(
        RegistryEntry(r, credentials, username_from='"credentials.user"', password_from='"credentials.password"')
        for r in registries))


# --- Mesos archive -----------------------------------------------------------------------------------
class _LimitedReader(io.RawIOBase):
    """A read-only stream that fails once more than ``limit`` bytes came out of ``inner``."""

    def __init__(self, inner: Any, limit: int):
        self.inner, self.left = inner, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self.inner.read(len(buffer))
        self.left -= len(chunk)
        if self.left < 0:
            raise CredentialsError(f"the archive unpacks to more than {MAX_ARCHIVE_UNPACKED_BYTES} bytes")
        buffer[:len(chunk)] = chunk
        return len(chunk)


def read_mesos_archive(data: bytes) -> RegistryCredentials:
    """A Mesos ``.tar.gz`` holding ``.docker/config.json``. Only that member is read (a regular file of at
    most 1 MiB), in memory; nothing is extracted, links and other members are never followed."""
    inner: Any = io.BytesIO(data)
    if data[:2] == b"\x1f\x8b":
        inner = gzip.GzipFile(fileobj=inner, mode="rb")
    stream = io.BufferedReader(_LimitedReader(inner, MAX_ARCHIVE_UNPACKED_BYTES))
    found: bytes | None = None
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for count, member in enumerate(archive, 1):
                if count > MAX_ARCHIVE_MEMBERS:
                    raise CredentialsError(f"the archive has more than {MAX_ARCHIVE_MEMBERS} members")
                name = member.name
                while name.startswith("./"):
                    name = name[2:]
                if name != MESOS_CONFIG_MEMBER:
                    continue
                if not member.isreg():
                    raise CredentialsError(f"{MESOS_CONFIG_MEMBER} in the archive is not a regular file")
                if member.size > MAX_DOCUMENT_BYTES:
                    raise CredentialsError(f"{MESOS_CONFIG_MEMBER} in the archive is larger than "
                                           f"{MAX_DOCUMENT_BYTES} bytes")
                if found is not None:
                    raise CredentialsError(f"the archive holds {MESOS_CONFIG_MEMBER} more than once")
                handle = archive.extractfile(member)
                found = handle.read(MAX_DOCUMENT_BYTES + 1) if handle else b""
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise CredentialsError(f"not a readable .tar.gz archive ({type(exc).__name__})") from None
    if found is None:
        raise CredentialsError(f"the archive holds no {MESOS_CONFIG_MEMBER}")
    try:
        return read_docker_config(found)
    except CredentialsError as exc:
        raise CredentialsError(f"{MESOS_CONFIG_MEMBER} in the archive: {exc}") from None


# --- --username and --password-stdin -----------------------------------------------------------------
def password_from_stdin(raw: bytes) -> str:
    """What ``docker login --password-stdin`` takes: the input less one trailing newline (``\\n``, ``\\r\\n``)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CredentialsError("the password read from stdin is not valid UTF-8") from None
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    return text


def from_username_password(username: str, password: str, upstream: str) -> RegistryCredentials:
    """``--username`` and a password, for ``upstream``."""
    return RegistryCredentials((RegistryEntry(upstream, Credentials(username, password),
                                              username_from="--username",
                                              password_from="the password read from stdin"),))
