"""``registry-cache credentials``: make Gardener's credentials Secret from what a user already has.

::

    registry-cache credentials create NAME --namespace NS --upstream UPSTREAM \\
        (--username U --password-stdin | --from-docker-config FILE | --from-dockercfg FILE |
         --from-rkt FILE | --from-mesos-archive FILE.tar.gz) [--dry-run] [--kubeconfig K]

builds the immutable opaque Secret (``username``/``password``) the cache for UPSTREAM uses, with exactly the
username and password ``docker login`` would have used (:mod:`api.credentials` reads the formats and picks
the entry for the upstream). ``--dry-run`` prints it as YAML; otherwise it is created in the cluster.

Exit codes: 0 done; 1 the API server refused the Secret; 2 an input cannot be used (the message names the
file, the key and the registry, never a value). A password appears only in the ``--dry-run`` YAML, which is
the output asked for.

``add_source_arguments`` and ``read_source`` are there for other commands that take the same sources
(``credentials rotate``), as are the Secret's manifest and the name of its next version.
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from api import credential_files
from api import credentials as creds
from api.field import Path as FieldPath
from api.secrets import PASSWORD_KEY, USERNAME_KEY, Credentials, SecretData, validate_upstream_secret
from api.urls import host_port_errors, is_dns1123_label, is_dns1123_subdomain
from extension.cli.errors import CommandFailed, InputError

MAX_ARCHIVE_BYTES = 16 << 20

# option dest -> (reader, what the file is, size limit)
_FILE_SOURCES: dict[str, tuple[Callable[[bytes], creds.RegistryCredentials], str, int]] = {
    "from_docker_config": (creds.read_docker_config, "Docker config.json", creds.MAX_DOCUMENT_BYTES),
    "from_dockercfg": (creds.read_dockercfg, "legacy .dockercfg", creds.MAX_DOCUMENT_BYTES),
    "from_rkt": (credential_files.read_rkt_auth, "rkt auth.d file", creds.MAX_DOCUMENT_BYTES),
    "from_mesos_archive": (credential_files.read_mesos_archive, "Mesos archive", MAX_ARCHIVE_BYTES),
}


class SourceError(InputError):
    """An input that cannot be used; the message names the file or option and the key, never a value."""


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the credentials come from: exactly one of these."""
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--username", "-u", metavar="U",
                       help="the username; the password is read from stdin (--password-stdin)")
    group.add_argument("--from-docker-config", metavar="FILE",
                       help="a Docker config.json (also a .dockerconfigjson): the entry for the upstream")
    group.add_argument("--from-dockercfg", metavar="FILE", help="a legacy .dockercfg: the entry for the upstream")
    group.add_argument("--from-rkt", metavar="FILE", help="an rkt /etc/rkt/auth.d/*.json file")
    group.add_argument("--from-mesos-archive", metavar="FILE.tar.gz",
                       help="a Mesos .tar.gz of .docker/config.json (read in memory, never extracted)")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from stdin (with --username; one trailing newline is dropped)")


def add_parser(subparsers: Any) -> Any:
    """Register ``credentials`` (with ``create``) on the CLI's subparsers; returns the ``credentials``
    subparsers so more subcommands (``rotate``) can be added."""
    parser = subparsers.add_parser(
        "credentials", help="make the credentials Secret of a private upstream from what you already have",
        description="Credentials Secrets for private upstreams, from a username and password, a Docker "
                    "config.json, a .dockercfg, an rkt auth.d file or a Mesos archive.")
    sub = parser.add_subparsers(dest="credentials_command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "create", help="create the immutable username/password Secret for one upstream",
        description="Builds Gardener's immutable opaque Secret (username, password) for UPSTREAM and creates it, "
                    "or prints it with --dry-run. Exit 0 done, 1 refused by the API server, 2 unusable input.")
    p.add_argument("name", metavar="NAME", help="the Secret's name, e.g. quay-credentials-v1")
    p.add_argument("--namespace", "-n", required=True, metavar="NS", help="the Shoot's namespace, e.g. garden-dev")
    p.add_argument("--upstream", required=True, metavar="UPSTREAM",
                   help="the cache's upstream, host[:port] as in caches[].upstream (e.g. docker.io, quay.io)")
    add_source_arguments(p)
    p.add_argument("--dry-run", action="store_true", help="print the Secret as YAML instead of creating it")
    p.add_argument("--kubeconfig", metavar="K", help="the cluster (default: in-cluster, then $KUBECONFIG)")
    p.set_defaults(func=cmd_create)
    return sub


def _read_file(path: str, what: str, limit: int) -> bytes:
    p = Path(path).expanduser()
    try:
        if not p.is_file():
            raise SourceError(f"{path}: no such file" if not p.exists() else f"{path}: not a file")
        with p.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the {what} ({exc.strerror or type(exc).__name__})") from None
    if len(data) > limit:
        raise SourceError(f"{path}: larger than {limit} bytes; not a {what}")
    return data


def _read_stdin(stdin: Any) -> bytes:
    stream = getattr(stdin, "buffer", None)
    raw = stream.read(creds.MAX_DOCUMENT_BYTES + 1) if stream is not None else stdin.read(creds.MAX_DOCUMENT_BYTES + 1)
    return raw.encode("utf-8") if isinstance(raw, str) else raw


def read_source(args: argparse.Namespace, upstream: str, stdin: Any = None) -> tuple[creds.RegistryEntry, str]:
    """The entry for ``upstream`` from the source the options name, and how to name that source in messages.
    Raises :class:`SourceError`."""
    if args.username is not None:
        if not args.password_stdin:
            raise SourceError("--username needs --password-stdin: a password is never taken on the command line")
        raw = _read_stdin(stdin if stdin is not None else sys.stdin)
        if len(raw) > creds.MAX_DOCUMENT_BYTES:
            raise SourceError(f"stdin: the password is larger than {creds.MAX_DOCUMENT_BYTES} bytes")
        try:
            password = credential_files.password_from_stdin(raw)
        except creds.CredentialsError as exc:
            raise SourceError(str(exc)) from None
        return credential_files.from_username_password(args.username, password, upstream).select(upstream), "--username"
    if args.password_stdin:
        raise SourceError("--password-stdin goes with --username, not with a file")
    for dest, (reader, what, limit) in _FILE_SOURCES.items():
        path = getattr(args, dest, None)
        if path is None:
            continue
        data = _read_file(path, what, limit)
        try:
            return reader(data).select(upstream), path
        except creds.CredentialsError as exc:
            raise SourceError(f"{path}: {exc}") from None
    raise SourceError("give the credentials: --username with --password-stdin, or one of --from-docker-config, "
                      "--from-dockercfg, --from-rkt, --from-mesos-archive")


def credentials_from_source(args: argparse.Namespace, upstream: str, name: str, namespace: str,
                            stdin: Any = None) -> tuple[Credentials, str]:
    """The checked credentials for the Secret ``namespace/name``: what :func:`read_source` found, held to
    Gardener's rules for the Secret it becomes. Raises :class:`SourceError`."""
    entry, source = read_source(args, upstream, stdin)
    problems = creds.credential_problems(entry)
    if problems:
        raise SourceError("\n".join(f"{source}: {p}" for p in problems))
    assert entry.credentials is not None
    secret = SecretData(namespace, name, True, {"username": entry.credentials.username.encode("utf-8"),
                                                "password": entry.credentials.password.encode("utf-8")})
    errors = validate_upstream_secret(secret, FieldPath("data"), name)
    if errors:
        raise SourceError("\n".join(f"{source}: the Secret {namespace}/{name} would not be valid: {e.detail}"
                                    for e in errors))
    return entry.credentials, source


def _check_names(name: str, namespace: str, upstream: str) -> None:
    problems = []
    if "://" in upstream:
        problems.append(f"--upstream {upstream!r}: give the host[:port] of caches[].upstream, without a scheme")
    else:
        problems += [f"--upstream {upstream!r}: {m}" for m in host_port_errors(upstream)]
    problems += [f"NAME {name!r}: {m}" for m in is_dns1123_subdomain(name)]
    problems += [f"--namespace {namespace!r}: {m}" for m in is_dns1123_label(namespace)]
    if problems:
        raise SourceError("\n".join(problems))


def cmd_create(args: argparse.Namespace) -> int:
    _check_names(args.name, args.namespace, args.upstream)
    credentials, source = credentials_from_source(args, args.upstream, args.name, args.namespace)
    manifest = secret_manifest(args.name, args.namespace, credentials)
    if args.dry_run:
        sys.stdout.write(yaml.safe_dump(manifest, sort_keys=False))
        return 0
    return _create(manifest, args.kubeconfig, args.upstream, source)


def _create(manifest: dict[str, Any], kubeconfig: str | None, upstream: str, source: str) -> int:
    from kubernetes.config import ConfigException

    from extension.runtime.kube import ApiError, Kube

    meta = manifest["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    try:
        kube = Kube.from_kubeconfig(kubeconfig)
    except (ConfigException, OSError) as exc:
        raise InputError(f"cannot load the kubeconfig{' ' + kubeconfig if kubeconfig else ''}: "
                         f"{type(exc).__name__}") from None
    try:
        kube.create(manifest)
    except ApiError as exc:
        message = f"the API server refused the Secret {where}: {exc.status} {exc.reason}: {exc.message}"
        if exc.conflict:
            message += ("\nSecrets for the cache are immutable: create the next version (e.g. "
                        f"{next_versioned_name([], meta['name'])}) and point the Shoot's spec.resources "
                        "entry at it")
        raise CommandFailed(message) from None
    except Exception as exc:  # noqa: BLE001 - the API server cannot be reached: the error names the host, never the Secret
        raise CommandFailed(f"cannot create the Secret {where}: {type(exc).__name__}: {exc}") from None
    print(f"secret/{meta['name']} created")
    print(f"{where}: username and password for {upstream} (from {source})", file=sys.stderr)
    return 0


# --- the Secret to create, and its next version ------------------------------------------------------
def secret_manifest(name: str, namespace: str, credentials: Credentials) -> dict[str, Any]:
    """Gardener's immutable opaque credentials Secret, ``data`` in base64 as ``kubectl`` prints it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": creds.TYPE_OPAQUE,
        "immutable": True,
        "data": {USERNAME_KEY: base64.b64encode(credentials.username.encode()).decode(),
                 PASSWORD_KEY: base64.b64encode(credentials.password.encode()).decode()},
    }


_VERSIONED = re.compile(r"^(?P<base>.+)-v(?P<n>[0-9]+)$")
MAX_SECRET_NAME_LENGTH = 253


def next_versioned_name(existing_names: Iterable[str], current: str) -> str:
    """The name of the next version of a credentials Secret: ``<base>-v<N+1>`` with N the highest version of
    ``<base>`` among ``current`` and ``existing_names``; a name without ``-vN`` counts as version 1
    (``quay-credentials`` -> ``quay-credentials-v2``)."""
    m = _VERSIONED.fullmatch(current)
    base, highest = (m["base"], int(m["n"])) if m else (current, 1)
    for name in existing_names:
        other = _VERSIONED.fullmatch(name)
        if other and other["base"] == base:
            highest = max(highest, int(other["n"]))
    name = f"{base}-v{highest + 1}"
    if len(name) > MAX_SECRET_NAME_LENGTH:
        raise ValueError(f"the next version of {current!r} would be longer than {MAX_SECRET_NAME_LENGTH} characters")
    return name
