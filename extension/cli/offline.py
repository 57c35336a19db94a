"""``registry-cache validate`` and ``registry-cache render``: admission and rendering from files, no cluster.

``validate`` runs the Shoot webhook's validation of both extensions (:func:`api.admission.admit_shoot`);
``render`` writes what the controller would deliver, from the components' pure plans
(:func:`.component.registrycache.plan` with the addresses of ``--endpoint`` and certificates made on the spot;
the mirrors' registry entries and CA bundle files, :mod:`.component.containerd`).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from api import names
from api import shoot as shootlib
from api.admission import Admission, admit_shoot, resolve_ca_bundles, resolve_credentials
from api.field import brief
from api.mirror_v1alpha1 import MirrorConfig
from api.urls import is_dns1123_subdomain, is_ip_address
from api.v1alpha3 import RegistryConfig
from api.validation import remote_url
from extension import constants as c
from extension.cli.errors import InputError
from extension.cli.inputs import Inputs, load_inputs, load_old_shoot
from extension.component import certs
from extension.component.containerd import (
    dial_timeout,
    hosts_toml_for_entry,
    mirror_files,
    mirror_registries,
    render_hosts_toml,
)
from extension.component.objects import RenderOptions
from extension.component.registrycache import cert_requests, plan, scheme


def add_parsers(sub: Any, exit_codes: str) -> None:
    p = sub.add_parser("validate", help="validate a Shoot's registry-cache configuration as admission does",
                       description="Validates the registry-cache part of a Shoot as the admission webhook does. "
                                   + exit_codes)
    p.add_argument("shoot", metavar="SHOOT.yaml")
    p.add_argument("--secret", action="append", default=[], metavar="SECRET.yaml",
                   help="a referenced credentials Secret (repeatable; kubectl get secret -o yaml output works)")
    p.add_argument("--old", metavar="OLD_SHOOT.yaml", help="validate as an update of this Shoot")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="render the cache objects and each upstream's hosts.toml offline",
                       description="Writes DIR/shoot/*.yaml, DIR/nodes/<upstream>/hosts.toml, "
                                   "DIR/nodes/ca-bundle.pem and DIR/provider-status.yaml. " + exit_codes)
    p.add_argument("shoot", metavar="SHOOT.yaml")
    p.add_argument("--secret", action="append", default=[], metavar="SECRET.yaml",
                   help="a referenced credentials Secret (repeatable)")
    p.add_argument("--output", "-o", required=True, metavar="DIR")
    p.add_argument("--endpoint", action="append", default=[], metavar="UPSTREAM=URL",
                   help="the URL nodes reach a cache at, e.g. docker.io=https://10.4.0.12:5000 (repeatable)")
    p.add_argument("--image", default=c.DEFAULT_IMAGE, help=f"the registry image (default {c.DEFAULT_IMAGE})")
    add_front_image_argument(p)
    p.add_argument("--vpa", action="store_true",
                   help="render a VerticalPodAutoscaler per cache (default: when the Shoot wants VPA, "
                        "spec.kubernetes.verticalPodAutoscaler.enabled)")
    add_dial_timeout_argument(p)
    p.set_defaults(func=cmd_render)


def add_front_image_argument(p: argparse.ArgumentParser) -> None:
    """``--front-image``, shared by ``render`` and ``run``."""
    p.add_argument("--front-image", metavar="IMAGE",
                   help="run the coalescing front in every cache Pod from this image (registry-cache's own: "
                        "`python -m extension.front`): one upstream fetch per blob however many nodes pull it at "
                        "once. Default: none, distribution alone serves the cache's port, as under Gardener")


def add_dial_timeout_argument(p: argparse.ArgumentParser) -> None:
    """``--dial-timeout``, shared by ``render`` and ``run``."""
    p.add_argument("--dial-timeout", default=c.DEFAULT_DIAL_TIMEOUT, metavar="DURATION",
                   help="containerd's dial_timeout for the cache host in hosts.toml (containerd 2.1+; older versions "
                        "ignore it): how long a node tries to reach a cache before it falls back to the upstream. "
                        "Caches only: a mirror's host has none (containerd's 30s). "
                        f"A Go duration; 0 leaves it out (containerd's 30s). Default {c.DEFAULT_DIAL_TIMEOUT}")


def parse_dial_timeout(value: str) -> str | None:
    try:
        return dial_timeout(value)
    except ValueError as exc:
        raise InputError(f"--dial-timeout: {exc}") from None


def _validated(shoot_file: str, inputs: Inputs, old: dict[str, Any] | None, what: str) -> Admission | None:
    """The validation of the Shoot; None, said on stderr, when it enables neither extension."""
    result = admit_shoot(inputs.shoot, old, inputs.secret_getter())
    if not result.enabled:
        print(f"{shoot_file}: the Shoot enables neither the registry-cache nor the registry-mirror extension; "
              f"nothing to {what}", file=sys.stderr)
        return None
    for err in result.errors:
        print(str(err))
    return result


def _summary(result: Admission) -> str:
    parts = []
    if result.cache.config is not None:
        caches = result.cache.config.caches
        parts.append(f"{len(caches)} caches: {', '.join(c.upstream for c in caches)}")
    if result.mirror.config is not None:
        mirrors = result.mirror.config.mirrors
        parts.append(f"{len(mirrors)} mirrors: {', '.join(m.upstream for m in mirrors)}")
    return "; ".join(parts)


def cmd_validate(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.shoot, args.secret)
    result = _validated(args.shoot, inputs, load_old_shoot(args.old) if args.old else None, "validate")
    if result is None:
        return 0
    if not result.ok:
        return 1
    print(f"{args.shoot}: valid ({_summary(result)})", file=sys.stderr)
    return 0


def parse_endpoints(values: Sequence[str]) -> dict[str, str]:
    out = {}
    for value in values:
        upstream, sep, url = value.partition("=")
        shown = brief(value, 200)
        if not sep or not upstream or not url.startswith(("http://", "https://")):
            raise InputError(f"--endpoint {shown}: expected UPSTREAM=URL, e.g. docker.io=https://10.4.0.12:5000")
        problem = _endpoint_problem(url)
        if problem:
            raise InputError(f"--endpoint {shown}: expected an http(s)://HOST[:PORT] URL: {problem}")
        out[upstream] = url
    return out


def _endpoint_problem(url: str) -> str | None:
    """What is wrong with an endpoint URL (an IP address, IPv6 in brackets, or a DNS name; a port), or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
        host = parts.hostname
    except ValueError as exc:
        return str(exc)[:200]
    if not host:
        return "it has no host"
    if not is_ip_address(host) and is_dns1123_subdomain(host):
        return f"{brief(host, 100)} is neither an IP address nor a DNS name"
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        return "it must not have a path, a query, a fragment or user info"
    return None


def host_of(url: str) -> str:
    """The host of an http(s) URL, without brackets; "" when it has none (see :func:`parse_endpoints`)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _endpoints(config: RegistryConfig, given: dict[str, str], namespace: str) -> tuple[dict[str, str], dict[str, str]]:
    """The URL nodes reach each cache at, and for those without ``--endpoint`` a note why it is a guess."""
    endpoints, notes = {}, {}
    for cache in config.caches:
        if cache.upstream in given:
            endpoints[cache.upstream] = given[cache.upstream]
            continue
        service = names.service_name(cache.upstream, cache.service_name_suffix)
        url = f"{scheme(cache)}://{service}.{namespace}.svc.cluster.local:{c.SERVER_PORT}"
        endpoints[cache.upstream] = url
        notes[cache.upstream] = ("endpoint is the Service DNS name: nodes usually cannot resolve it; set the cluster "
                                 f"IP with --endpoint {cache.upstream}={scheme(cache)}://<clusterIP>:{c.SERVER_PORT}")
        print(f"note: {cache.upstream}: no --endpoint given, hosts.toml points at {url} (the Service's DNS name); "
              "nodes reach the cache by its cluster IP, which only the API server assigns: pass "
              f"--endpoint {cache.upstream}={scheme(cache)}://<clusterIP>:{c.SERVER_PORT}", file=sys.stderr)
    return endpoints, notes


def cmd_render(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.shoot, args.secret)
    given = parse_endpoints(args.endpoint)
    timeout = parse_dial_timeout(args.dial_timeout)
    result = _validated(args.shoot, inputs, None, "render")
    if result is None:
        return 0
    if not result.ok:
        return 1
    config = result.cache.config
    unknown = sorted(set(given) - {cache.upstream for cache in (config.caches if config else [])})
    if unknown:
        raise InputError(f"--endpoint given for {', '.join(unknown)}, which no cache of the Shoot has")

    out = Path(args.output)
    files = RenderedFiles(out)
    said = []
    if config is not None and result.cache.extension_path is not None:
        said.append(_render_caches(args, inputs, config, result.cache.extension_path, given, timeout, files))
    if result.mirror.config is not None:
        said.append(_render_mirrors(inputs, result.mirror.config, files))
    files.remove_earlier()  # what an earlier render wrote (content-hashed names change), nothing else
    files.write()
    (out / "shoot").mkdir(exist_ok=True)  # there even when nothing is delivered to the shoot (only mirrors)
    print("rendered " + "; ".join(said), file=sys.stderr)
    return 0


def _render_caches(args: argparse.Namespace, inputs: Inputs, config: RegistryConfig, extension_path: Any,
                   given: dict[str, str], timeout: str | None, files: RenderedFiles) -> str:
    namespace = (inputs.shoot.get("metadata") or {}).get("namespace") or ""
    credentials = resolve_credentials(inputs.shoot, config, inputs.secret_getter(), namespace,
                                      extension_path.child("providerConfig"))
    options = RenderOptions(image=args.image, vpa=args.vpa or shootlib.wants_vpa(inputs.shoot), dial_timeout=timeout,
                            front_image=args.front_image or None)
    endpoints, notes = _endpoints(config, given, options.namespace)

    ca = certs.generate_ca()
    addresses = {u: [host_of(url)] for u, url in given.items() if is_ip_address(host_of(url))}
    server_certs = {r.upstream: certs.generate_server_cert(ca, r.common_name, r.dns_names, r.ip_addresses)
                    for r in cert_requests(config, options.namespace, addresses)}
    planned = plan(config, credentials, endpoints, server_certs, ca.cert_pem if server_certs else None, options)

    shoot_dir, nodes_dir = files.root / "shoot", files.root / "nodes"
    for i, obj in enumerate(planned.objects):
        files.add(f"shoot/{i:02d}-{obj.filename}", obj.text, secret=obj.kind == "Secret")
    for cache in config.caches:
        files.add(f"nodes/{cache.upstream}/hosts.toml",
                  render_hosts_toml(cache.upstream, remote_url(cache), endpoints[cache.upstream], c.CA_BUNDLE_PATH,
                                    notes.get(cache.upstream), dial_timeout=timeout))
    if server_certs:
        files.add(f"nodes/{c.CA_BUNDLE_FILE}", ca.cert_pem)
    files.add("provider-status.yaml", yaml.safe_dump(planned.status.to_wire(), sort_keys=False))
    return (f"{len(planned.objects)} objects to {shoot_dir}/ and {len(config.caches)} hosts.toml of caches to "
            f"{nodes_dir}/")


def _render_mirrors(inputs: Inputs, config: MirrorConfig, files: RenderedFiles) -> str:
    """Per mirrored upstream ``nodes/<upstream>/hosts.toml``, and each private mirror's CA bundle where the
    hosts.toml names it (a path below /etc/containerd/certs.d, so below ``nodes/``)."""
    namespace = (inputs.shoot.get("metadata") or {}).get("namespace") or ""
    bundles = resolve_ca_bundles(inputs.shoot, config, inputs.secret_getter(), namespace)
    for entry in mirror_registries(config):
        files.add(f"nodes/{entry['upstream']}/hosts.toml", hosts_toml_for_entry(entry))
    ca_files = mirror_files(config, bundles)
    for file in ca_files:
        files.add(f"nodes/{PurePosixPath(file['path']).relative_to(c.CERTS_DIR)}",
                  base64.b64decode(file["content"]["inline"]["data"]).decode("utf-8"))
    return f"{len(config.mirrors)} hosts.toml of mirrors and {len(ca_files)} CA bundles to {files.root / 'nodes'}/"


class RenderedFiles:
    """The files one render writes into DIR, listed in ``DIR/.registry-cache-render`` so that the next render
    removes exactly those (and never a file it did not write). Secrets (the config Secret with the upstream's
    password, the TLS Secrets with private keys) are written 0600, everything else 0644."""

    LIST = ".registry-cache-render"

    def __init__(self, root: Path):
        self.root = root
        self.files: list[tuple[str, str, bool]] = []

    def remove_earlier(self) -> None:
        listed = self.root / self.LIST
        try:
            earlier = listed.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{listed}: cannot be read ({exc}); remove it or render into another directory") from None
        root = self.root.resolve()
        directories = set()
        for relative in earlier:
            path = (self.root / relative).resolve()
            if not relative or path.parent == path or root not in path.parents:
                continue  # only files inside DIR
            if path.is_file() and not path.is_symlink():
                path.unlink()
            directories.add(path.parent)
        for directory in sorted(directories, key=lambda d: len(d.parts), reverse=True):
            while directory != root and root in directory.parents:
                try:
                    directory.rmdir()  # only when empty: what else is in it stays
                except OSError:
                    break
                directory = directory.parent
        listed.unlink()

    def add(self, relative: str, text: str, secret: bool = False) -> None:
        self.files.append((relative, text, secret))

    def write(self) -> None:
        """List the files first (an interrupted render is cleaned up by the next one), then write them."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / self.LIST).write_text("".join(f"{relative}\n" for relative, _, _ in self.files),
                                           encoding="utf-8")
        for relative, text, secret in self.files:
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o600 if secret else 0o644
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), mode)  # an existing file would keep its mode otherwise
                handle.write(text)
