"""One test's data path: upstreams, caches made from what the extension renders, containerds, crane.

:class:`DataPath` starts everything a test asks for and stops all of it in :meth:`DataPath.close` (the
fixture's finalizer). The caches are configured only by the project's own code:

- the providerConfig cache entry is decoded and defaulted with :func:`api.validation.decode_and_default`
  (so ``http.tls`` defaults to true, the ttl to 168h, ...) and validated;
- the credentials come from a Secret manifest through :func:`api.secrets.secret_from_manifest`,
  checked with :func:`api.secrets.validate_upstream_secret` as the webhook does;
- ``config.yml`` and the other files of the config Secret (the credential helper, the upstream's credentials,
  the htpasswd file) are :func:`extension.component.objects.config_files`, ``config.yml`` handed to
  distribution unchanged (the paths a node has, of the volume, the TLS files, the htpasswd file and the
  credential helper, only through distribution's ``REGISTRY_*`` environment overrides);
- the TLS material is :func:`extension.component.certs.generate_ca` / :func:`extension.component.certs.generate_server_cert`
  for the Service names and the "cluster IP" 127.0.0.1, as the controller issues it;
- containerd's ``hosts.toml`` goes through the controller's chain: :func:`extension.component.render.provider_status`
  -> :func:`extension.component.render.hosts_toml_for_status`, the CA path pointed at this test's bundle file.
"""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api import names
from api.credential_provider import CredentialProvider
from api.credentials import UpstreamAuth, credential_errors, upstream_auth
from api.field import Path as FieldPath
from api.secrets import Credentials, credentials_of, secret_from_manifest, validate_upstream_secret
from api.v1alpha3 import RegistryCache
from api.validation import decode_and_default, remote_url, tls_enabled, validate_registry_config
from extension.component.certs import KeyPair, generate_server_cert, service_dns_names
from extension.component.containerd import hosts_toml_for_status
from extension.component.nodeauth import NodeCredentials
from extension.component.objects import (
    CONFIG_FILE_MODES,
    RenderOptions,
    config_files,
    endpoint,
    provider_status,
    render_cache,
)
from extension.constants import (
    BACKEND_PORT,
    CACHE_PATH,
    CONTAINER_NAME,
    CREDENTIAL_HELPER_KEY,
    DEFAULT_DIAL_TIMEOUT,
    FRONT_CERTS_PATH,
    FRONT_CONTAINER_NAME,
    HTPASSWD_KEY,
    SERVER_PORT,
    SHOOT_NAMESPACE,
)

from .dataplane import (
    LOOPBACK,
    Containerd,
    Crane,
    Front,
    Image,
    Registry,
    Tools,
    Upstream,
    free_port,
    write_hosts_dir,
)

API_VERSION = "registry.extensions.gardener.cloud/v1alpha3"
CA_SECRET_NAME = "ca-extension-registry-cache-bundle"


def credentials_secret(name: str, username: str, password: str) -> dict[str, Any]:
    """The immutable Secret a user creates for a private upstream (docs/usage/credentials.md)."""
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "garden-e2e"},
            "type": "Opaque", "immutable": True, "stringData": {"username": username, "password": password}}


def credentials_from_secret(manifest: dict[str, Any], reference_name: str) -> Credentials:
    secret = secret_from_manifest(manifest)
    errors = validate_upstream_secret(secret, FieldPath("spec", "resources"), reference_name)
    assert not errors, f"the test's Secret does not validate: {errors}"
    return credentials_of(secret)


def auth_from_secret(manifest: dict[str, Any], upstream: str, reference_name: str) -> UpstreamAuth:
    """What a cache authenticates with, from a Secret in any accepted format (a credential provider plugin's
    too), checked as the webhook checks it."""
    secret = secret_from_manifest(manifest)
    errors = credential_errors(secret, upstream, FieldPath("spec", "resources"), reference_name)
    assert not errors, f"the test's Secret does not validate: {errors}"
    return upstream_auth(secret, upstream)


def decode_cache(upstream: Any, *, tls: bool | None, secret_reference: str | None) -> RegistryCache:
    """One providerConfig cache entry for ``upstream``, decoded and defaulted (``tls=None``: leave ``http``
    out, i.e. the default, TLS on)."""
    entry: dict[str, Any] = {"upstream": upstream.host, "remoteURL": upstream.url}
    if secret_reference:
        entry["secretReferenceName"] = secret_reference
    if tls is not None:
        entry["http"] = {"tls": tls}
    path = FieldPath("spec", "extensions").index(0).child("providerConfig")
    config = decode_and_default({"apiVersion": API_VERSION, "kind": "RegistryConfig", "caches": [entry]}, path)
    errors = validate_registry_config(config, path)
    assert not errors, f"the test's providerConfig does not validate: {errors}"
    return config.caches[0]


@dataclass
class Cache:
    """A running cache and what it was made from; with ``front``, as a cache Pod with the coalescing front runs:
    the front serves the cache's port, distribution listens behind it on loopback without TLS."""

    model: RegistryCache
    credentials: UpstreamAuth | None
    config_text: str  # exactly the config.yml config_files rendered
    registry: Registry
    plugin_state: Path | None = None  # a plugin cache's state directory (the Pod's in-memory emptyDir)
    front: Front | None = None

    @property
    def host(self) -> str:
        """Where clients reach the cache."""
        return self.front.host if self.front else self.registry.host

    @property
    def endpoint(self) -> str:
        """The endpoint the controller would report (``<scheme>://<clusterIP>:<port>``)."""
        if self.front:
            return endpoint("https" if self.front.tls else "http", LOOPBACK, self.front.port)
        return endpoint(self.registry.scheme, LOOPBACK, self.registry.port)


def rendered_front_container(model: RegistryCache, credentials: UpstreamAuth | None, keypair: tuple[str, str] | None,
                             node_auth: NodeCredentials | None, config_text: str) -> dict[str, Any]:
    """The front container of the cache's StatefulSet as the controller renders it with a front image; also
    checks that the config Secret it renders beside it holds ``config_text`` as distribution's config.yml."""
    tls = KeyPair(*keypair) if keypair else None
    objects = render_cache(model, credentials, tls, RenderOptions(front_image="registry-cache:e2e"), node_auth)
    secret = next(o.obj for o in objects if o.kind == "Secret" and "config.yml" in o.obj["data"])
    assert base64.b64decode(secret["data"]["config.yml"]).decode("utf-8") == config_text
    sts = next(o.obj for o in objects if o.kind == "StatefulSet")
    containers = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {CONTAINER_NAME, FRONT_CONTAINER_NAME}, containers
    return containers[FRONT_CONTAINER_NAME]


class DataPath:
    def __init__(self, tools: Tools, workdir: Path, ca: KeyPair | None = None):
        self.tools = tools
        self.workdir = workdir
        self.ca = ca
        self.ca_bundle: Path | None = None
        if ca is not None:
            # The bundle the controller publishes for nodes (Secret ca-extension-registry-cache-bundle,
            # bundle.crt: the CA certificate; `registry-cache render` writes the same as nodes/ca-bundle.pem).
            self.ca_bundle = workdir / "ca-bundle.pem"
            self.ca_bundle.write_text(ca.cert_pem, encoding="utf-8")
        self.crane = Crane(tools.crane, workdir / "crane")
        self._registries: list[Registry | Front] = []
        self._containerds: list[Containerd] = []
        self._n = 0

    def _dir(self, kind: str) -> Path:
        self._n += 1
        return self.workdir / f"{self._n:02d}-{kind}"

    # --- registries ---

    def upstream(self, users: dict[str, str]) -> Upstream:
        up = Upstream(self.tools.registry, self._dir("upstream"), users)
        self._registries.append(up)
        return up.start()

    def push(self, upstream: Upstream, repository: str, tag: str, user: str | None) -> Image:
        """Push a test image as ``user`` (None: anonymously, to a public upstream)."""
        return self.crane.push_test_image(upstream, repository, tag, (user, upstream.users[user]) if user else None)

    def cache(self, upstream: Any, credentials: UpstreamAuth | None, *, tls: bool | None,
              secret_reference: str | None = "upstream-credentials", node_auth: NodeCredentials | None = None,
              plugin: Path | None = None, workdir: Path | None = None, front: bool = False,
              env: dict[str, str] | None = None) -> Cache:
        """A cache for ``upstream`` started from exactly the rendered ``config.yml`` (and, for a cache only
        nodes can read, the htpasswd file of its config Secret, at the path config.yml names on a node).

        With a credential provider plugin (``credentials``), its binary ``plugin`` is put where the init
        container copies it (None: nothing is copied), its state directory made as the Pod's emptyDir, and the
        helper runs under busybox's sh, as in the cache image. ``workdir``: a cache's directory again (its
        storage, as a Pod's volume outlives the Pod), with the files rendered now.

        ``front``: as the cache Pod runs with the coalescing front (``run --front-image``): the rendered
        StatefulSet's front container (its command and arguments, only addresses and paths mapped onto this
        machine: the spool in distribution's storage directory, as both mount the cache's volume) in front of
        distribution from the rendered ``config.yml`` for that Pod (loopback, no TLS of its own). ``env``: more
        environment for distribution (e.g. ``SSL_CERT_FILE`` for an upstream with TLS)."""
        model = decode_cache(upstream, tls=tls, secret_reference=secret_reference if credentials else None)
        files = config_files(model, credentials, node_auth, front)
        text = files.pop("config.yml")
        workdir = workdir or self._dir("cache")
        workdir.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():  # the other files of its config Secret, beside each other
            (workdir / name).write_text(content, encoding="utf-8")
            if name in CONFIG_FILE_MODES:  # with the modes of the Pod's mount
                (workdir / name).chmod(CONFIG_FILE_MODES[name][0])
        extra_env = {**(env or {}), "REGISTRY_PROXY_EXEC_COMMAND": str(workdir / CREDENTIAL_HELPER_KEY)}
        state = None
        if isinstance(credentials, CredentialProvider):
            bin_dir, state = workdir / "credential-provider" / "bin", workdir / "credential-provider" / "state"
            shutil.rmtree(bin_dir, ignore_errors=True)  # a new Pod: its emptyDirs are new
            shutil.rmtree(state, ignore_errors=True)
            bin_dir.mkdir(parents=True)
            state.mkdir()
            state.chmod(0o777)  # as an emptyDir is made
            if plugin is not None:  # the init container's cp
                shutil.copy(plugin, bin_dir / credentials.name)
            busybox = shutil.which("busybox")
            assert busybox, "busybox (the cache image's sh) runs the plugin cache's helper"
            wrapper = workdir / "helper-under-busybox"
            wrapper.write_text(f'#!{busybox} sh\nexec {busybox} sh {workdir / CREDENTIAL_HELPER_KEY} "$@"\n')
            wrapper.chmod(0o755)
            extra_env.update({"REGISTRY_PROXY_EXEC_COMMAND": str(wrapper),
                              "REGISTRY_CACHE_CREDENTIAL_PROVIDER_BIN_DIR": str(bin_dir),
                              "REGISTRY_CACHE_CREDENTIAL_PROVIDER_STATE_DIR": str(state)})
        if node_auth is not None:
            extra_env["REGISTRY_AUTH_HTPASSWD_PATH"] = str(workdir / HTPASSWD_KEY)
        keypair = None
        if tls_enabled(model):
            assert self.ca is not None, "a TLS cache needs the DataPath's CA"
            name = names.resource_name(model.upstream)
            server = generate_server_cert(self.ca, name, service_dns_names(name, SHOOT_NAMESPACE), [LOOPBACK])
            keypair = (server.cert_pem, server.key_pem)
        if not front:
            reg = Registry(self.tools.registry, "cache", workdir, text, tls=keypair, ca_file=self.ca_bundle,
                           extra_env=extra_env)
            self._registries.append(reg)
            reg.start()
            return Cache(model, credentials, text, reg, plugin_state=state)
        reg = Registry(self.tools.registry, "cache", workdir, text, extra_env=extra_env)
        self._registries.append(reg)
        reg.start()
        container = rendered_front_container(model, credentials, keypair, node_auth, text)
        mapping = {f"--listen=:{SERVER_PORT}": f"--listen={LOOPBACK}:{free_port()}",
                   f"--backend=127.0.0.1:{BACKEND_PORT}": f"--backend={reg.host}",
                   f"--spool-dir={CACHE_PATH}": f"--spool-dir={reg.storage}"}
        if keypair:
            (workdir / "front-tls.crt").write_text(keypair[0], encoding="utf-8")
            (workdir / "front-tls.key").write_text(keypair[1], encoding="utf-8")
            (workdir / "front-tls.key").chmod(0o600)
            mapping[f"--tls-cert={FRONT_CERTS_PATH}/tls.crt"] = f"--tls-cert={workdir / 'front-tls.crt'}"
            mapping[f"--tls-key={FRONT_CERTS_PATH}/tls.key"] = f"--tls-key={workdir / 'front-tls.key'}"
        port = int(mapping[f"--listen=:{SERVER_PORT}"].rsplit(":", 1)[1])
        fr = Front(workdir, container["command"], container["args"], mapping, port,
                   self.ca_bundle if keypair else None)
        self._registries.append(fr)  # stopped with the registries
        fr.start()
        return Cache(model, credentials, text, reg, plugin_state=state, front=fr)

    # --- containerd ---

    def hosts_dir(self, *caches: Cache, ca_path: Path | None = None,
                  dial_timeout: str | None = DEFAULT_DIAL_TIMEOUT) -> Path:
        """``--hosts-dir`` with the hosts.toml per upstream the controller's status leads to (with the node
        agent's default ``dial_timeout``, which Debian's containerd 1.6 ignores)."""
        status = provider_status([(c.model.upstream, c.endpoint, remote_url(c.model)) for c in caches],
                                 CA_SECRET_NAME if any(tls_enabled(c.model) for c in caches) else None)
        ca = ca_path or self.ca_bundle
        files = hosts_toml_for_status(status, ca_path=str(ca) if ca else None, dial_timeout=dial_timeout)
        d = self._dir("hosts")
        write_hosts_dir(d, files)
        return d

    def containerd(self, bin_dir: Path | None = None) -> Containerd:
        """A fresh containerd (Debian's, or the one in ``bin_dir``)."""
        c = Containerd(self._dir("containerd"), bin_dir)
        self._containerds.append(c)
        return c.start()

    # --- teardown ---

    def close(self) -> None:
        errors = []
        for thing in [*self._containerds, *self._registries]:
            try:
                thing.stop()
            except Exception as e:  # keep stopping the others
                errors.append(e)
        if errors:
            raise errors[0]
