"""Gardener's own rendering as the oracle: what this controller delivers, compared field by field with what
``github.com/gardener/gardener-extension-registry-cache`` v0.24.0 delivers for the same Shoot.

**Gardener's side.** ``hack/parity.sh render`` builds ``hack/go/render`` (a Go program linking the extension's
module; no go.sum in the repository, ``go mod tidy`` in a temporary copy) once into the bin cache. For each case it
runs, against a controller-runtime fake client holding the Cluster (with the case's Shoot) and gardenlet's
``ref-`` copies of the referenced Secrets, what the registry-cache actuator's Reconcile runs: the hibernation check,
the strict decode, ``registrycacheservices.New(...).Deploy``, the Services read back from that ManagedResource with
the case's cluster IPs, ``SecretsManagerForCluster``, ``registrycaches.New(...).Deploy`` with the actuator's
``Values`` (image from the extension's image vector, VPA, monitoring unless purpose ``testing``, the Shoot's
resources), the provider status, the secrets manager's Cleanup; then the OperatingSystemConfig ensurers of both
extension types (``pkg/webhook/cache``, ``pkg/webhook/mirror``) on the case's OperatingSystemConfig spec. It answers
with the objects of the ManagedResources (what gardener-resource-manager applies to the shoot), everything written
into the seed namespace, the provider status and the mutated OperatingSystemConfig spec (see its main.go).

**Our side.** The same inputs go through this project's own code paths as ``registry-cache run --gardener`` wires
them: :class:`~extension.controller.actuator.Actuator` (monitoring in the seed, Gardener's way) and
:class:`~extension.controller.mirror.MirrorActuator` reconcile the Extensions against an in-memory seed and shoot
(:class:`FakeCluster`: what is applied is recorded as sent, Services get the case's cluster IPs), the provider
status is written to the Extension as the reconciler writes it, and the OperatingSystemConfig webhooks
(:func:`extension.webhook.osc.ensure`, :func:`~extension.webhook.osc.ensure_mirror`) mutate the same spec, caches
first.

**Compared** as delivered, before any API server: the shoot objects, the seed objects, the provider status, the
OperatingSystemConfig spec and the registry entries nodes get (Gardener's: what the webhooks added to or changed in
the OperatingSystemConfig; ours: the node agent's ConfigMaps of standalone mode), each flattened into field paths (lists of named things keyed by their name,
upstream, path or URL, with their order compared separately). Normalized, and nothing else:

* values made per run: certificates and keys (Secret data ``tls.crt``, ``tls.key``, ``ca.crt``, ``ca.key``,
  ``bundle.crt``, the CA bundle file of the OperatingSystemConfig) are replaced by what they say (subject and
  issuer common names, DNS and IP SANs, CA or not, validity in days, key usages, key algorithm and size); the
  secrets manager's ``issued-at-time``/``valid-until-time`` labels and ``checksum-of-signing-ca`` label, our
  ``rendered-hash`` annotation;
* names with a hash: a content-hashed Secret name (``MakeUnique``: config and TLS Secrets) has its 8 hex digits
  checked against the checksum of its own data and replaced by ``<checksum>``; the secrets manager's Secret names
  (``<config name>-<hash>``) and the ManagedResource Secrets (``...-<hash>``) by ``<hash>``; every reference to a
  renamed Secret (volumes, the status' ``caSecretName``, the CA's common name) follows; gardener-resource-manager's
  reference annotation keys (``reference.resources.gardener.cloud/secret-<sha256(name)[:8]>``) are checked and
  named after the Secret they point at;
* serialization: Go's typed objects carry ``status`` (top level and in claim templates), ``creationTimestamp: null``
  and zero values of fields without ``omitempty`` (``serviceName: ""``, ``updateStrategy: {}``, ``sandboxImage:
  ""``); the fake clients add ``resourceVersion``. Those are dropped, and a null, empty string, empty list or empty
  map counts as absent (except in labels, annotations and Secret data). Secret data is compared decoded:
  ``config.yml`` parsed as YAML (comments and layout do not count), ``upstream-credentials`` as JSON, the rest as
  text.

Every difference left must be listed in ``docs/differences-rendering.yaml`` (object, field, Gardener's value,
ours, why), which ``docs/differences-rendering.md`` renders as a table (kept current by this test;
``REGISTRY_CACHE_UPDATE_DOCS=1`` rewrites it). The test fails on a difference the list does not have, on an entry
no case shows any more, and on a stale table.

**Corpus.** Every example of Gardener's docs and examples (extracted at test time from the module's ``docs/`` and
``example/``: the Shoots' providerConfigs; the one broken example, in ``ca-bundle-for-private-mirror.md``, is
repaired here and its breakage asserted), and cases for TLS off and mixed, HA, ``serviceNameSuffix``, credentials
(with quotes), VPA, the ``testing`` purpose, hibernation, proxies, storage class and TTL, long upstreams, ports,
IPv6 cluster IPs, disabled extensions, mirrors (CA bundles, ``overridePath``, several hosts, long hosts) and a
Shoot with both, on an OperatingSystemConfig that already has registries and files.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from api import names
from api import shoot as shootlib
from api.field import Path
from api.validation import decode_and_default
from extension import constants as c
from extension.component import certs
from extension.component.objects import RenderOptions, secret_checksum
from extension.component.registrycache import MONITORING_GARDENER
from extension.controller.actuator import Actuator
from extension.controller.mirror import MirrorActuator
from extension.webhook import osc as osc_webhook

REPO = FsPath(__file__).resolve().parents[2]
DIFFERENCES_YAML = REPO / "docs" / "differences-rendering.yaml"
DIFFERENCES_MD = REPO / "docs" / "differences-rendering.md"
UPDATE_DOCS = os.environ.get("REGISTRY_CACHE_UPDATE_DOCS") == "1"
MODULE = "github.com/gardener/gardener-extension-registry-cache"
CACHE_API = "registry.extensions.gardener.cloud/v1alpha3"
MIRROR_API = "mirror.extensions.gardener.cloud/v1alpha1"

ABSENT = "<absent>"
PRESENT = "<present>"
ANY = "<any>"
WHOLE = "(object)"


# --------------------------------------------------------------------------------------------------------------
# Gardener's side


def _tag() -> str:
    for line in (REPO / "hack" / "go" / "render" / "go.mod").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == MODULE:
            return parts[1]
    raise AssertionError(f"hack/go/render/go.mod requires no {MODULE}")


class GoRender:
    """The harness binary; one process per batch of JSON lines."""

    def __init__(self, binary: str):
        self.binary = binary

    def run(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        payload = "".join(json.dumps(r) + "\n" for r in requests)
        proc = subprocess.run([self.binary], input=payload, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"gardener-render exited {proc.returncode}: {proc.stderr[-2000:]}"
        lines = proc.stdout.splitlines()
        assert len(lines) == len(requests), f"{len(requests)} requests, {len(lines)} answers: {proc.stderr[-2000:]}"
        answers = [json.loads(line) for line in lines]
        for req, ans in zip(requests, answers):
            assert "fatal" not in ans, f"gardener-render could not handle {req['namespace']}: {ans['fatal']}"
        return answers


@pytest.fixture(scope="module")
def go_render() -> GoRender:
    if shutil.which("go") is None:
        pytest.skip("go is not on PATH: Gardener's rendering harness (hack/parity.sh render) is built with Go")
    proc = subprocess.run(["bash", str(REPO / "hack" / "parity.sh"), "render"], cwd=REPO, capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        pytest.fail(f"hack/parity.sh render failed with exit code {proc.returncode}:\n{proc.stderr[-4000:]}",
                    pytrace=False)
    binary = proc.stdout.strip().splitlines()[-1]
    assert os.access(binary, os.X_OK), f"hack/parity.sh render printed {binary!r}, not an executable"
    return GoRender(binary)


@pytest.fixture(scope="module")
def gardener_module(go_render) -> FsPath:
    """The extension's module source (docs, examples) in the Go module cache (there after the harness build)."""
    proc = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{_tag()}"], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return FsPath(json.loads(proc.stdout)["Dir"])


# --------------------------------------------------------------------------------------------------------------
# Our side: the controller's actuators on an in-memory seed and shoot


def _matches(obj: dict[str, Any], selector: str | None) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, eq, value = term.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


class FakeCluster:
    """Objects by (kind, namespace, name). ``apply`` records the body as sent (:attr:`sent`) and stores it as the
    API server would answer: a resourceVersion, the controller as the only field manager, a Service's cluster IP
    from ``cluster_ips`` (by name). Serves every kind."""

    def __init__(self, cluster_ips: dict[str, str] | None = None):
        self.cluster_ips = cluster_ips or {}
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.sent: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._version = 0

    @staticmethod
    def _key(kind: str, name: str, namespace: str | None) -> tuple[str, str, str]:
        return kind, namespace or "", name

    def put(self, obj: dict[str, Any]) -> None:
        """An input (not sent by the controller)."""
        meta = obj["metadata"]
        self._version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._version)
        self.objects[self._key(obj["kind"], meta["name"], meta.get("namespace"))] = stored

    def get(self, kind: str, name: str, namespace: str | None = None, metadata_only: bool = False
            ) -> dict[str, Any] | None:
        obj = self.objects.get(self._key(kind, name, namespace))
        if obj is None:
            return None
        obj = copy.deepcopy(obj)
        return {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": obj["metadata"]} if metadata_only \
            else obj

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None,
             metadata_only: bool = False, **_: Any) -> list[dict[str, Any]]:
        out = []
        for (k, ns, name), obj in sorted(self.objects.items()):
            if k == kind and (namespace is None or ns == namespace) and _matches(obj, label_selector):
                found = self.get(k, name, ns or None, metadata_only)
                assert found is not None
                out.append(found)
        return out

    def apply(self, obj: dict[str, Any], force: bool = True, subresource: str | None = None) -> dict[str, Any]:
        assert subresource is None, "the actuators apply no subresource"
        meta = obj["metadata"]
        key = self._key(obj["kind"], meta["name"], meta.get("namespace"))
        self.sent[key] = copy.deepcopy(obj)
        self._version += 1
        stored = copy.deepcopy(obj)
        stored["metadata"]["resourceVersion"] = str(self._version)
        stored["metadata"]["managedFields"] = [{"manager": c.FIELD_MANAGER, "operation": "Apply"}]
        if obj["kind"] == "Service":
            assert meta["name"] in self.cluster_ips, f"the case has no cluster IP for Service {meta['name']}"
            stored.setdefault("spec", {})["clusterIP"] = self.cluster_ips[meta["name"]]
        self.objects[key] = stored
        return copy.deepcopy(stored)

    def delete(self, kind: str, name: str, namespace: str | None = None, **_: Any) -> bool:
        key = self._key(kind, name, namespace)
        self.sent.pop(key, None)
        return self.objects.pop(key, None) is not None

    def has_kind(self, kind: str) -> bool:
        return True


def ours(request: dict[str, Any]) -> dict[str, Any]:
    """What this project delivers for a harness request, in the harness's answer shape."""
    namespace, shoot = request["namespace"], request["shoot"]
    seed, target = FakeCluster(), FakeCluster(request["clusterIPs"])
    seed.put({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster", "metadata": {"name": namespace},
              "spec": {"shoot": shoot, "seed": {}, "cloudProfile": {}}})
    for secret in request["secrets"]:
        seed.put({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "immutable": True,
                  "metadata": {"name": secret["name"], "namespace": namespace}, "data": secret["data"]})
    extensions: dict[str, dict[str, Any]] = {}
    for extension_type in shootlib.EXTENSION_TYPES:  # gardenlet makes an Extension of each enabled one
        entry = shootlib.find_extension(shoot, extension_type)
        if entry is None:
            continue
        obj: dict[str, Any] = {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                               "metadata": {"name": extension_type, "namespace": namespace, "generation": 1},
                               "spec": {"type": extension_type, "providerConfig": entry.provider_config}}
        seed.put(obj)
        extensions[extension_type] = obj

    options = RenderOptions()  # as `registry-cache run --gardener` makes them: the default image and dial timeout
    shoot_target: Any = lambda ns: target  # every namespace's shoot is the one fake
    actuator = Actuator(seed, shoot_target, options, monitoring=MONITORING_GARDENER)  # type: ignore[arg-type]
    mirrors = MirrorActuator(seed, shoot_target, options, readers=actuator)  # type: ignore[arg-type]
    answer: dict[str, Any] = {"hibernated": False, "status": None}
    spec = copy.deepcopy(request["osc"])
    try:
        if c.EXTENSION_TYPE in extensions:
            ext = extensions[c.EXTENSION_TYPE]
            outcome = actuator.reconcile(ext)
            answer["hibernated"] = actuator._records[namespace].hibernated
            answer["status"] = outcome.provider_status
            if outcome.provider_status is not None:  # as the reconciler writes it
                ext["status"] = {"providerStatus": outcome.provider_status}
                seed.put(ext)
        if c.MIRROR_EXTENSION_TYPE in extensions:
            mirrors.reconcile(extensions[c.MIRROR_EXTENSION_TYPE])
        osc = {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "OperatingSystemConfig",
               "metadata": {"name": "osc", "namespace": namespace}, "spec": spec}
        for extension_type, ensure in ((c.EXTENSION_TYPE, osc_webhook.ensure),
                                       (c.MIRROR_EXTENSION_TYPE, osc_webhook.ensure_mirror)):
            if extension_type in extensions:
                changed = ensure(seed, osc)  # type: ignore[arg-type]
                if changed is not None:
                    osc["spec"] = {**osc["spec"], **changed}
        spec = osc["spec"]
    except Exception as exc:  # compared with Gardener's failure
        answer["error"] = f"{type(exc).__name__}: {exc}"
    answer["shoot"] = list(target.sent.values())
    answer["seed"] = list(seed.sent.values())
    answer["osc"] = spec
    return answer


# --------------------------------------------------------------------------------------------------------------
# Normalization


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _describe_key(pem: bytes) -> dict[str, Any]:
    key = serialization.load_pem_private_key(pem, password=None)
    header = pem.split(b"\n", 1)[0].decode()
    if isinstance(key, rsa.RSAPrivateKey):
        return {"privateKey": f"RSA {key.key_size}", "pem": header}
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"privateKey": f"EC {key.curve.name}", "pem": header}
    return {"privateKey": type(key).__name__, "pem": header}


def _describe_cert(cert: x509.Certificate) -> dict[str, Any]:
    def cn(name: x509.Name) -> str:
        attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(attrs[0].value) if attrs else ""

    out: dict[str, Any] = {"subject": cn(cert.subject), "issuer": cn(cert.issuer),
                           "validityDays": round((cert.not_valid_after_utc - cert.not_valid_before_utc)
                                                 / dt.timedelta(days=1))}
    public = cert.public_key()
    out["publicKey"] = f"RSA {public.key_size}" if isinstance(public, rsa.RSAPublicKey) else \
        f"EC {public.curve.name}" if isinstance(public, ec.EllipticCurvePublicKey) else type(public).__name__
    exts = {e.oid: e.value for e in cert.extensions}
    basic = exts.get(x509.BasicConstraints.oid)
    out["isCA"] = bool(basic is not None and basic.ca)
    san = exts.get(x509.SubjectAlternativeName.oid)
    if san is not None:
        out["dnsNames"] = sorted(san.get_values_for_type(x509.DNSName))
        out["ipAddresses"] = sorted(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    usage = exts.get(x509.KeyUsage.oid)
    if usage is not None:
        out["keyUsage"] = sorted(k for k in ("digital_signature", "key_encipherment", "key_cert_sign", "crl_sign",
                                             "content_commitment", "data_encipherment", "key_agreement")
                                 if getattr(usage, k))
    ext_usage = exts.get(x509.ExtendedKeyUsage.oid)
    if ext_usage is not None:
        known = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
        out["extKeyUsage"] = sorted(known.get(u, u.dotted_string) for u in ext_usage)
    return out


def describe_pem(data: bytes) -> Any:
    """What PEM data says, without what is made per run (keys, serials, times)."""
    if b"PRIVATE KEY" in data.split(b"\n", 1)[0]:
        return _describe_key(data)
    return [_describe_cert(cert) for cert in x509.load_pem_x509_certificates(data)]


def decode_value(key: str, raw: bytes) -> Any:
    """Secret data (or a file's content) as compared: PEM described, config.yml parsed, JSON parsed, else text."""
    if raw.startswith(b"-----BEGIN"):
        return describe_pem(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"binary sha256": hashlib.sha256(raw).hexdigest()}
    if key == "config.yml":
        return yaml.safe_load(text)
    if key == c.UPSTREAM_CREDENTIALS_KEY:
        return json.loads(text)
    return text


KEEP_EMPTY = {"labels", "annotations", "data"}  # maps whose empty string values mean something
REFERENCE_ANNOTATION = re.compile(r"^reference\.resources\.gardener\.cloud/(secret|configmap)-([0-9a-f]{8})$")
HASHED = re.compile(r"^(.+)-([0-9a-f]{8})$")


def _drop_empty(value: Any, parent: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _drop_empty(v, k)
            if parent not in KEEP_EMPTY and (v is None or v == "" or v == {} or v == []):
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_drop_empty(v, parent) for v in value]
    return value


def _rename(value: Any, renamed: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {renamed.get(k, k): _rename(v, renamed) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, renamed) for v in value]
    if isinstance(value, str):
        return renamed.get(value, value)
    return value


Key = tuple[str, str, str]  # (where: shoot|seed|status|osc, kind, name)


def documents(answer: dict[str, Any], request: dict[str, Any] | None = None, gardener: bool = True
              ) -> dict[Key, Any]:
    """An answer as normalized documents (see the module docstring): Gardener's (``gardener``) or ours, for
    ``request`` (its namespace is the owner whose hash our names of objects there is one of per Extension carry,
    ``owned_name``; its OperatingSystemConfig what the webhooks started from)."""
    request = request or {"namespace": "", "osc": {}}
    owner = request["namespace"]
    raw: list[tuple[str, dict[str, Any]]] = [("shoot", o) for o in answer["shoot"]] + \
        [("seed", o) for o in answer["seed"]]
    renamed: dict[str, str] = {}
    owner_hash = hashlib.sha256(owner.encode()).hexdigest()[:8]
    for _, obj in raw:
        match = HASHED.match(obj["metadata"]["name"])
        if match and match.group(2) == owner_hash:
            renamed[obj["metadata"]["name"]] = f"{match.group(1)}-<owner hash>"
    mr_secrets = {ref.get("name") for where, o in raw if o.get("kind") == "ManagedResource"
                  for ref in (o.get("spec") or {}).get("secretRefs") or []}
    for where, obj in raw:
        if obj.get("kind") != "Secret":
            continue
        meta = obj["metadata"]
        name, labels = meta["name"], meta.get("labels") or {}
        match = HASHED.match(name)
        if name in mr_secrets and match:
            renamed[name] = f"{match.group(1)}-<hash>"
        elif labels.get("managed-by") == "secrets-manager" and name.startswith(f"{labels.get('name')}-"):
            renamed[name] = f"{labels['name']}-<hash>"
        elif where == "shoot" and match and labels.get(c.GC_REFERENCE_LABEL) == "true":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            ok = secret_checksum(data)[:8] == match.group(2)
            renamed[name] = f"{match.group(1)}-" + ("<checksum>" if ok else "<not the checksum of its data>")

    docs: dict[Key, Any] = {}
    for where, obj in raw:
        obj = copy.deepcopy(obj)
        obj.pop("status", None)
        meta = obj.setdefault("metadata", {})
        for k in ("resourceVersion", "creationTimestamp", "managedFields", "uid", "generation"):
            meta.pop(k, None)
        for template in (obj.get("spec") or {}).get("volumeClaimTemplates") or []:
            template.pop("status", None)
        labels = meta.get("labels") or {}
        for label in ("issued-at-time", "valid-until-time"):
            if label in labels:
                assert re.fullmatch(r"\d+", labels[label]), labels[label]
                labels[label] = "<unix time>"
        if "checksum-of-signing-ca" in labels:
            labels["checksum-of-signing-ca"] = "<hash>"
        annotations = meta.get("annotations") or {}
        if c.RENDERED_HASH_ANNOTATION in annotations:
            annotations[c.RENDERED_HASH_ANNOTATION] = "<hash>"
        _reference_annotations(obj, renamed)
        if obj.get("kind") == "Secret":
            obj["data"] = {k: decode_value(k, base64.b64decode(v)) if v != "<serialized objects>" else v
                           for k, v in (obj.get("data") or {}).items()}
        obj = _rename(obj, renamed)
        docs[(where, obj.get("kind", "?"), meta.get("name") and renamed.get(meta["name"], meta["name"]))] = \
            _drop_empty(obj)
    if answer.get("status") is not None:
        status = _rename(copy.deepcopy(answer["status"]), renamed)
        docs[("status", "RegistryStatus", "providerStatus")] = _drop_empty(status)
    spec = copy.deepcopy(answer.get("osc") or {})
    for file in spec.get("files") or []:
        inline = (file.get("content") or {}).get("inline") or {}
        if inline.get("encoding") == "b64":
            inline["data"] = decode_value(file.get("path", ""), base64.b64decode(inline["data"]))
    docs[("osc", "OperatingSystemConfig", "spec")] = _drop_empty(_rename(spec, renamed))
    nodes = gardener_node_entries(answer, request) if gardener else node_agent_entries(answer)
    if nodes["registries"] or nodes["files"] or nodes.get("caBundle"):
        docs[("nodes", "containerd", "registry entries")] = _drop_empty(_rename(nodes, renamed))
    return docs


def _described_files(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = copy.deepcopy(files)
    for file in out:
        inline = (file.get("content") or {}).get("inline") or {}
        if inline.get("encoding") == "b64":
            inline["data"] = decode_value(file.get("path", ""), base64.b64decode(inline["data"]))
    return out


def gardener_node_entries(answer: dict[str, Any], request: dict[str, Any]) -> dict[str, Any]:
    """What gardener-node-agent gets from the webhooks: the registry entries and files they added or changed in the
    OperatingSystemConfig (the caches' CA bundle apart)."""
    spec, before = answer.get("osc") or {}, request.get("osc") or {}
    old = {e.get("upstream"): e for e in ((before.get("criConfig") or {}).get("containerd") or {}).get("registries")
           or []}
    registries = [e for e in ((spec.get("criConfig") or {}).get("containerd") or {}).get("registries") or []
                  if old.get(e.get("upstream")) != e]
    old_files = {f.get("path"): f for f in before.get("files") or []}
    files = _described_files([f for f in spec.get("files") or [] if old_files.get(f.get("path")) != f])
    bundle = [f for f in files if f.get("path") == c.CA_BUNDLE_PATH]
    return {"registries": registries, "files": [f for f in files if f.get("path") != c.CA_BUNDLE_PATH],
            "caBundle": bundle[0]["content"]["inline"]["data"] if bundle else None}


def node_agent_entries(answer: dict[str, Any]) -> dict[str, Any]:
    """What our node agent gets in standalone mode: the node-config ConfigMaps (caches', then mirrors')."""
    out: dict[str, Any] = {"registries": [], "files": [], "caBundle": None}
    maps = [o for o in answer["shoot"] if o["kind"] == "ConfigMap"
            and (o["metadata"].get("labels") or {}).get(c.NODE_CONFIG_LABEL) == "true"]
    for cm in sorted(maps, key=lambda o: o["metadata"]["labels"][c.MANAGED_BY_LABEL] != c.MANAGED_BY):
        data = cm.get("data") or {}
        out["registries"] += (yaml.safe_load(data.get(c.NODE_CONFIG_REGISTRIES_KEY) or "{}") or {}).get("registries") \
            or []
        out["files"] += _described_files((yaml.safe_load(data.get(c.NODE_CONFIG_FILES_KEY) or "{}") or {}).get("files")
                                         or [])
        if data.get(c.NODE_CONFIG_CA_BUNDLE_KEY):
            out["caBundle"] = describe_pem(data[c.NODE_CONFIG_CA_BUNDLE_KEY].encode())
    return out


def _reference_annotations(obj: dict[str, Any], renamed: dict[str, str]) -> None:
    """gardener-resource-manager's reference annotations, keyed by the Secret they name (the hash checked)."""
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for meta in (obj.get("metadata") or {}, template):
        annotations = meta.get("annotations")
        if not annotations:
            continue
        for key in list(annotations):
            match = REFERENCE_ANNOTATION.match(key)
            if match and hashlib.sha256(annotations[key].encode()).hexdigest()[:8] == match.group(2):
                value = annotations.pop(key)
                annotations[f"reference.resources.gardener.cloud/{match.group(1)}-<sha256 of the name>:"
                            f"{renamed.get(value, value)}"] = value


# --------------------------------------------------------------------------------------------------------------
# Flattening and differences

IDENTITY = ("name", "upstream", "path", "containerName", "url")
PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def _segment(key: str) -> str:
    return f".{key}" if PLAIN_KEY.match(key) else f"[{json.dumps(key)}]"


def _identity(items: list[Any]) -> tuple[str, list[str]] | None:
    """How the items of a list are named: (label, names), when each has a distinct name (a Prometheus rule by its
    alert or record)."""
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    candidates: list[tuple[str, list[Any]]] = [(key, [i.get(key) for i in items]) for key in IDENTITY]
    candidates.append(("rule", [i.get("alert") or i.get("record") for i in items]))
    for key, values in candidates:
        if all(isinstance(v, str) for v in values) and len(set(values)) == len(values):
            return key, values
    return None


def flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(field path, leaf) pairs: scalars and lists of scalars are leaves; lists of named things are keyed by name
    (``[name=...]``) with their order as the leaf ``<path>#order``."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from flatten(v, path + _segment(str(k)))
        return
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        identity = _identity(value)
        if identity is None:
            for i, v in enumerate(value):
                yield from flatten(v, f"{path}[{i}]")
            return
        key, item_names = identity
        yield f"{path}#order".lstrip("."), item_names
        for item, item_name in zip(value, item_names):
            yield from flatten(item, f"{path}[{key}={item_name}]")
        return
    yield path.lstrip("."), value


@dataclass(frozen=True)
class Difference:
    where: str
    kind: str
    name: str
    field: str
    gardener: Any
    ours: Any

    @property
    def object(self) -> str:
        return f"{self.where} {self.kind} {self.name}"

    def describe(self) -> str:
        return (f"{self.object}: {self.field}: Gardener {json.dumps(self.gardener, sort_keys=True)}, ours "
                f"{json.dumps(self.ours, sort_keys=True)}")


NAME_SUFFIX = re.compile(r"-<(hash|checksum|owner hash|not the checksum of its data)>$")


def _pairs(go: dict[Key, Any], py: dict[Key, Any]) -> Iterator[tuple[Key | None, Key | None]]:
    """The objects of both sides side by side: by key, else by their name without its hash (one of Gardener's
    named ``<name>-<hash>`` and ours ``<name>``, or the other way round); the rest alone."""
    both = set(go) & set(py)
    yield from ((k, k) for k in sorted(both))

    def base(key: Key) -> Key:
        return key[0], key[1], NAME_SUFFIX.sub("", key[2])

    go_left = {k for k in go if k not in both}
    py_left = {k for k in py if k not in both}
    by_base: dict[Key, list[Key]] = {}
    for k in py_left:
        by_base.setdefault(base(k), []).append(k)
    for k in sorted(go_left):
        candidates = by_base.get(base(k), [])
        if len(candidates) == 1 and len([g for g in go_left if base(g) == base(k)]) == 1:
            py_left.discard(candidates[0])
            yield k, candidates[0]
        else:
            yield k, None
    yield from ((None, k) for k in sorted(py_left))


def differences(go: dict[Key, Any], py: dict[Key, Any]) -> list[Difference]:
    out = []
    for go_key, py_key in _pairs(go, py):
        if go_key is None or py_key is None:
            key = go_key or py_key
            assert key is not None
            out.append(Difference(*key, WHOLE, PRESENT if go_key else ABSENT, PRESENT if py_key else ABSENT))
            continue
        key = go_key
        a, b = dict(flatten(go[go_key])), dict(flatten(py[py_key]))
        for path in sorted(set(a) | set(b)):
            va, vb = a.get(path, ABSENT), b.get(path, ABSENT)
            if va == vb:
                continue
            if path.endswith("#order") and va is not ABSENT and vb is not ABSENT and sorted(va) != sorted(vb):
                continue  # the items themselves differ: reported per item
            out.append(Difference(*key, path, va, vb))
    return out


# --------------------------------------------------------------------------------------------------------------
# The accepted differences (docs/differences-rendering.yaml)


def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$", re.DOTALL)


@dataclass
class Accepted:
    """One documented difference: ``object`` is ``<where> <kind> <name>`` (``*`` a wildcard anywhere), ``field`` a
    flattened path (``*`` a wildcard; ``(object)`` for the whole object), ``gardener`` and ``ours`` the values
    (``<absent>``, ``<present>``, ``<any>``: any value but absent, or the value itself)."""

    id: str
    object: str
    field: str
    gardener: Any
    ours: Any
    why: str
    seen: int = 0
    _object: re.Pattern[str] = dataclasses.field(init=False, repr=False)
    _field: re.Pattern[str] = dataclasses.field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._object, self._field = _glob(self.object), _glob(self.field)

    @staticmethod
    def _value_matches(expected: Any, actual: Any) -> bool:
        if expected == ANY:
            return actual is not ABSENT and actual != ABSENT
        return json.dumps(expected, sort_keys=True) == json.dumps(actual, sort_keys=True)

    def matches(self, d: Difference) -> bool:
        return bool(self._object.match(d.object) and self._field.match(d.field)
                    and self._value_matches(self.gardener, d.gardener) and self._value_matches(self.ours, d.ours))


def load_accepted() -> list[Accepted]:
    entries = yaml.safe_load(DIFFERENCES_YAML.read_text(encoding="utf-8"))
    accepted = []
    for entry in entries:
        unknown = set(entry) - {"id", "object", "field", "gardener", "ours", "why"}
        assert not unknown, f"{DIFFERENCES_YAML.name}: {entry.get('id')}: unknown keys {sorted(unknown)}"
        accepted.append(Accepted(entry["id"], entry["object"], entry["field"], entry["gardener"], entry["ours"],
                                 " ".join(entry["why"].split())))
    ids = [a.id for a in accepted]
    assert len(ids) == len(set(ids)), f"{DIFFERENCES_YAML.name}: duplicate ids"
    return accepted


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) and value in (ABSENT, PRESENT, ANY) else \
        json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    if text in (ABSENT, PRESENT, ANY):
        return {ABSENT: "absent", PRESENT: "present", ANY: "any value"}[text]
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def render_table(accepted: list[Accepted]) -> str:
    lines = ["| id | object | field | Gardener v0.24.0 | ours | why |", "| --- | --- | --- | --- | --- | --- |"]
    for a in accepted:
        lines.append(f"| {a.id} | `{a.object}` | `{a.field.replace('|', chr(92) + '|')}` | {_cell(a.gardener)} | "
                     f"{_cell(a.ours)} | {a.why.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- BEGIN generated from differences-rendering.yaml -->", "<!-- END generated -->"


# --------------------------------------------------------------------------------------------------------------
# The corpus


def _ca_pem(common_name: str) -> bytes:
    return certs.generate_ca(common_name).cert_pem.encode()


MIRROR_CA = _ca_pem("private-mirror-ca")
CREDENTIALS = {"username": b"robot$ci", "password": b"s3cr3t"}


@dataclass
class Case:
    id: str
    shoot: dict[str, Any]
    secrets: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)  # gardenlet's ref- copies, by name
    osc: dict[str, Any] | None = None
    ipv6: bool = False


def shoot(*extensions: dict[str, Any], name: str = "crazy-botany", project_namespace: str = "garden-dev",
          resources: tuple[tuple[str, str], ...] = (), **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
            "metadata": {"name": name, "namespace": project_namespace},
            "spec": {"extensions": list(extensions),
                     "resources": [{"name": n, "resourceRef": {"apiVersion": "v1", "kind": "Secret", "name": s}}
                                   for n, s in resources],
                     **spec}}


def caches(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": c.EXTENSION_TYPE, "providerConfig": {"apiVersion": CACHE_API, "kind": "RegistryConfig",
                                                         "caches": list(items)}, **extra}


def mirrors(*items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": c.MIRROR_EXTENSION_TYPE, "providerConfig": {"apiVersion": MIRROR_API, "kind": "MirrorConfig",
                                                                "mirrors": list(items)}, **extra}


LONG_UPSTREAM = "my-very-long-registry.very-long-subdomain.example.com"
# 252 characters (ValidateURL allows 253): the CA bundle's file name is cut and gets a hash (Gardener's sanitizeHost)
LONG_HOST = "https://" + ".".join(ch * 60 for ch in "abc") + ".example.com/v2/" + "p" * 46

FEATURE_CASES = [
    Case("tls-off", shoot(caches({"upstream": "docker.io", "http": {"tls": False}},
                                 {"upstream": "ghcr.io", "http": {"tls": False}}))),
    Case("tls-mixed", shoot(caches({"upstream": "docker.io"}, {"upstream": "ghcr.io", "http": {"tls": False}}))),
    Case("ha-vpa-tls", shoot(caches({"upstream": "docker.io", "highAvailability": {"enabled": True}},
                                    {"upstream": "quay.io", "highAvailability": {"enabled": False}}),
                             kubernetes={"verticalPodAutoscaler": {"enabled": True}})),
    Case("ha-tls-off", shoot(caches({"upstream": "ghcr.io", "highAvailability": {"enabled": True},
                                     "http": {"tls": False}}))),
    Case("vpa-disabled", shoot(caches({"upstream": "docker.io"}),
                               kubernetes={"verticalPodAutoscaler": {"enabled": False}})),
    Case("service-name-suffix", shoot(caches({"upstream": "docker.io", "serviceNameSuffix": "hub"},
                                             {"upstream": "quay.io", "serviceNameSuffix": "quay-plain",
                                              "http": {"tls": False}}))),
    Case("credentials", shoot(caches({"upstream": "quay.io", "secretReferenceName": "quay"},
                                     {"upstream": "docker.io", "secretReferenceName": "hub", "http": {"tls": False}}),
                              resources=(("quay", "quay-v1"), ("hub", "hub-v2"))),
         secrets={"ref-quay-v1": CREDENTIALS,
                  "ref-hub-v2": {"username": b"o'neil", "password": b"it's \"quoted\" \\ and: {yaml} # not"}}),
    Case("purpose-testing", shoot(caches({"upstream": "docker.io"}), purpose="testing")),
    Case("purpose-production-vpa", shoot(caches({"upstream": "docker.io"}), purpose="production",
                                         kubernetes={"verticalPodAutoscaler": {"enabled": True}})),
    Case("hibernated", shoot(caches({"upstream": "docker.io"}), mirrors(
        {"upstream": "quay.io", "hosts": [{"host": "https://mirror.example.com"}]}),
        hibernation={"enabled": True})),
    Case("hibernated-with-schedules", shoot(caches({"upstream": "docker.io", "http": {"tls": False}}),
                                            hibernation={"enabled": True, "schedules": [{"start": "00 20 * * 1,2,3"}]})),
    Case("proxy-storage-ttl", shoot(caches({"upstream": "docker.io", "proxy": {"httpProxy": "http://proxy.corp:3128",
                                                                                "httpsProxy": "http://proxy.corp:3129"},
                                            "volume": {"size": "55Gi", "storageClassName": "premium"},
                                            "garbageCollection": {"ttl": "72h30m"}},
                                           {"upstream": "ghcr.io", "proxy": {"httpsProxy": "https://p.corp"},
                                            "garbageCollection": {"ttl": "0s"}}))),
    Case("long-and-port-upstreams", shoot(caches({"upstream": LONG_UPSTREAM},
                                                 {"upstream": "my-registry.io:5000"},
                                                 {"upstream": "10.1.2.3:8443", "remoteURL": "https://10.1.2.3:8443"}))),
    Case("ipv6", shoot(caches({"upstream": "docker.io"}, {"upstream": "ghcr.io", "http": {"tls": False}})),
         ipv6=True),
    Case("disabled-extensions", shoot(caches({"upstream": "docker.io"}, disabled=True),
                                      mirrors({"upstream": "quay.io", "hosts": [{"host": "https://m.example.com"}]},
                                              disabled=True))),
    Case("mirrors", shoot(mirrors(
        {"upstream": "docker.io", "hosts": [{"host": "https://mirror.gcr.io"},
                                            {"host": "http://10.0.0.1:8080", "capabilities": ["pull", "resolve"]}]},
        {"upstream": "registry.k8s.io", "hosts": [{"host": "https://harbor.example.com/v2/k8s",
                                                   "capabilities": ["pull", "resolve"], "overridePath": True}]},
        {"upstream": "my-registry.io:5000", "hosts": [{"host": "https://m.example.com:8443",
                                                       "caBundleSecretReferenceName": "ca"},
                                                      {"host": LONG_HOST, "caBundleSecretReferenceName": "ca",
                                                       "overridePath": False}]}),
        resources=(("ca", "mirror-ca-v1"),)),
        secrets={"ref-mirror-ca-v1": {"bundle.crt": MIRROR_CA}}),
    Case("caches-and-mirrors-on-a-configured-node",
         shoot(caches({"upstream": "docker.io"}, {"upstream": "ghcr.io", "http": {"tls": False}}),
               mirrors({"upstream": "quay.io", "hosts": [{"host": "https://quay-mirror.example.com",
                                                          "caBundleSecretReferenceName": "ca"}]}),
               resources=(("ca", "ca-v3"),)),
         secrets={"ref-ca-v3": {"bundle.crt": MIRROR_CA}},
         osc={"criConfig": {"name": "containerd", "containerd": {"registries": [
             {"upstream": "docker.io", "server": "https://registry-1.docker.io",
              "hosts": [{"url": "https://old-cache.example.com", "capabilities": ["pull"]}]},
             {"upstream": "gcr.io", "server": "https://gcr.io", "hosts": [{"url": "https://gcr-mirror.example.com"}]},
         ]}}, "files": [
             {"path": "/etc/containerd/certs.d/ca-bundle.pem", "permissions": 0o600,
              "content": {"inline": {"encoding": "b64", "data": _b64(_ca_pem("an-old-bundle"))}}},
             {"path": "/etc/motd", "content": {"inline": {"encoding": "", "data": "hello"}}},
         ]}),
]


def _fill(shoot_obj: dict[str, Any]) -> dict[str, Any]:
    """A docs example's Shoot as the seed's Cluster has it: apiVersion, name and namespace filled where the
    example leaves them out (``# ...``)."""
    shoot_obj = copy.deepcopy(shoot_obj)
    shoot_obj.setdefault("apiVersion", "core.gardener.cloud/v1beta1")
    shoot_obj.setdefault("kind", "Shoot")
    meta = shoot_obj.setdefault("metadata", {}) or {}
    shoot_obj["metadata"] = meta
    meta.setdefault("name", "crazy-botany")
    meta.setdefault("namespace", "garden-dev")
    return shoot_obj


def _inputs_for(shoot_obj: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    """gardenlet's ref- copies of every Secret a docs example references: credentials for caches, the mirror CA
    for mirrors."""
    mirror_refs = set()
    ext = shootlib.find_registry_mirror_extension(shoot_obj)
    if ext is not None:
        for m in (ext.provider_config or {}).get("mirrors") or []:
            mirror_refs |= {h["caBundleSecretReferenceName"] for h in m.get("hosts") or []
                            if h.get("caBundleSecretReferenceName")}
    out = {}
    for res in (shoot_obj.get("spec") or {}).get("resources") or []:
        out[f"ref-{res['resourceRef']['name']}"] = {"bundle.crt": MIRROR_CA} if res["name"] in mirror_refs \
            else dict(CREDENTIALS)
    return out


YAML_BLOCK = re.compile(r"^([ \t]*)```ya?ml[ \t]*\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
# ca-bundle-for-private-mirror.md: the mirror list is indented one column short of its key, and the
# MirrorConfig's apiVersion is v1alpha3 (there is only v1alpha1). The example, repaired:
BROKEN_DOCS_EXAMPLE = "docs/usage/registry-mirror/ca-bundle-for-private-mirror.md#1"
REPAIRED = shoot(mirrors({"upstream": "quay.io", "hosts": [{"host": "https://private-mirror.internal",
                                                            "caBundleSecretReferenceName": "private-mirror-ca-bundle"}]}),
                 resources=(("private-mirror-ca-bundle", "private-mirror-ca-bundle-v1"),))


def docs_examples(module: FsPath) -> tuple[list[Case], dict[str, str]]:
    """Every Shoot of the module's docs (YAML blocks of docs/**/*.md) and examples (example/*.yaml) that enables one
    of the extensions, and the ones that cannot be read (where -> why)."""
    found: list[tuple[str, str]] = []
    for md in sorted((module / "docs").rglob("*.md")):
        for i, match in enumerate(YAML_BLOCK.finditer(md.read_text(encoding="utf-8")), 1):
            text = "\n".join(line[len(match.group(1)):] for line in match.group(2).splitlines())
            found.append((f"{md.relative_to(module)}#{i}", text))
    for example in sorted((module / "example").glob("*.yaml")):
        found.append((str(example.relative_to(module)), example.read_text(encoding="utf-8")))
    cases, broken = [], {}
    for where, text in found:
        try:
            docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        except yaml.YAMLError as exc:
            broken[where] = f"not YAML: {str(exc).splitlines()[0]}"
            continue
        for j, doc in enumerate(docs):
            if doc.get("kind") != "Shoot" or not any(
                    e.get("type") in (c.EXTENSION_TYPE, c.MIRROR_EXTENSION_TYPE)
                    for e in (doc.get("spec") or {}).get("extensions") or []):
                continue
            shoot_obj = _fill(doc)
            cases.append(Case(f"docs:{where}" + (f"/{j}" if len(docs) > 1 else ""), shoot_obj,
                              _inputs_for(shoot_obj)))
    return cases, broken


def _cluster_ips(case: Case) -> dict[str, str]:
    ext = shootlib.find_registry_cache_extension(case.shoot)
    if ext is None or ext.provider_config is None:
        return {}
    config = decode_and_default(ext.provider_config, Path("providerConfig"))
    ips = {}
    for i, cache in enumerate(config.caches):
        service = names.service_name(cache.upstream, cache.service_name_suffix)
        ips[service] = f"fd00:10:4::{10 + i:x}" if case.ipv6 else f"10.4.0.{10 + i}"
    return ips


def request_for(case: Case) -> dict[str, Any]:
    meta = case.shoot["metadata"]
    project = meta["namespace"].removeprefix("garden-") or "garden"
    return {"namespace": shootlib.technical_namespace(project, meta["name"]), "shoot": case.shoot,
            "secrets": [{"name": n, "data": {k: _b64(v) for k, v in data.items()}}
                        for n, data in sorted(case.secrets.items())],
            "clusterIPs": _cluster_ips(case),
            "osc": copy.deepcopy(case.osc) if case.osc is not None else {"criConfig": {"name": "containerd"}}}


# --------------------------------------------------------------------------------------------------------------
# The test


@dataclass
class Compared:
    case: Case
    request: dict[str, Any]
    go: dict[str, Any]
    py: dict[str, Any]
    diffs: list[Difference]


@pytest.fixture(scope="module")
def compared(go_render, gardener_module) -> list[Compared]:
    examples, broken = docs_examples(gardener_module)
    assert broken == {BROKEN_DOCS_EXAMPLE: broken.get(BROKEN_DOCS_EXAMPLE, "?")} and \
        broken[BROKEN_DOCS_EXAMPLE].startswith("not YAML"), \
        f"the docs examples that cannot be read changed: {broken}"
    assert len(examples) == 5, f"the docs of {_tag()} have 5 Shoot examples, found {[e.id for e in examples]}"
    cases = examples + [Case(f"docs:{BROKEN_DOCS_EXAMPLE} (repaired)", REPAIRED, _inputs_for(REPAIRED))] + \
        FEATURE_CASES
    requests = [request_for(case) for case in cases]
    answers = go_render.run(requests)
    out = []
    for case, req, go in zip(cases, requests, answers):
        py = ours(req)
        out.append(Compared(case, req, go, py, differences(documents(go, req), documents(py, req, gardener=False))))
    return out


def test_gardener_renders_every_case(compared):
    """The oracle is not empty: every case that enables the caches (not hibernated) got StatefulSets, Services and
    a provider status from Gardener's code, every mirror case registry entries; no case failed on either side."""
    failed = [f"{x.case.id}: Gardener: {x.go.get('error')!r}; ours: {x.py.get('error')!r}"
              for x in compared if x.go.get("error") or x.py.get("error")]
    assert not failed, "\n".join(failed)
    for x in compared:
        if shootlib.find_registry_cache_extension(x.case.shoot) and not shootlib.is_hibernated(x.case.shoot):
            kinds = {o["kind"] for o in x.go["shoot"]}
            assert {"StatefulSet", "Service", "Secret", "NetworkPolicy"} <= kinds, (x.case.id, kinds)
            assert x.go["status"] and x.go["status"]["caches"], x.case.id
        else:
            assert x.go["shoot"] == [] and x.go["status"] is None, x.case.id
            assert x.py["status"] is None and not [o for o in x.py["shoot"] if o["kind"] != "ConfigMap"], x.case.id
        assert x.go["hibernated"] == x.py["hibernated"], x.case.id
    ids = {x.case.id for x in compared}
    assert {"tls-off", "ha-vpa-tls", "service-name-suffix", "credentials", "purpose-testing", "hibernated",
            "mirrors"} <= ids


def test_every_difference_is_documented(compared):
    accepted = load_accepted()
    undocumented: dict[str, list[str]] = {}
    for x in compared:
        for d in x.diffs:
            hits = [a for a in accepted if a.matches(d)]
            for a in hits:
                a.seen += 1
            if not hits:
                undocumented.setdefault(d.describe(), []).append(x.case.id)
    lines = []
    if undocumented:
        lines.append(f"{len(undocumented)} differences from Gardener's rendering are not in "
                     f"{DIFFERENCES_YAML.relative_to(REPO)} (fix them or document them there):")
        for text, where in sorted(undocumented.items()):
            lines.append(f"  {text}  [{len(where)} cases, e.g. {where[0]}]")
    unseen = [a.id for a in accepted if a.seen == 0]
    if unseen:
        lines.append(f"entries of {DIFFERENCES_YAML.relative_to(REPO)} no case shows any more (remove them): "
                     + ", ".join(unseen))
    assert not lines, "\n".join(lines)


def test_the_table_in_the_docs_is_current():
    accepted = load_accepted()
    table = render_table(accepted)
    text = DIFFERENCES_MD.read_text(encoding="utf-8")
    assert BEGIN in text and END in text, f"{DIFFERENCES_MD} lacks the markers of the generated table"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    expected = f"{head}{BEGIN}\n{table}{END}{tail}"
    if UPDATE_DOCS and text != expected:
        DIFFERENCES_MD.write_text(expected, encoding="utf-8")
        return
    assert text == expected, (f"{DIFFERENCES_MD.relative_to(REPO)} is not what {DIFFERENCES_YAML.name} renders: run "
                              "REGISTRY_CACHE_UPDATE_DOCS=1 python -m pytest tests/integration/test_gardener_rendering.py")


def _config(answer: dict[str, Any], upstream: str) -> dict[str, Any]:
    name = names.resource_name(upstream)
    for obj in answer["shoot"]:
        if obj["kind"] == "Secret" and obj["metadata"]["name"].startswith(f"{name}-config-"):
            return {k: base64.b64decode(v) for k, v in obj["data"].items()}
    raise AssertionError(f"no config Secret for {upstream}")


def test_the_same_credentials_reach_the_upstream(compared):
    """Where the table says Gardener writes ``proxy.username``/``proxy.password`` into config.yml and ours the
    credential helper's file: the cache sends the same username and password to its upstream (Gardener's
    single-quote escaping undone by the YAML parser)."""
    checked = 0
    for x in compared:
        if x.go["status"] is None:
            continue
        for cache in x.go["status"]["caches"]:
            go_config = yaml.safe_load(_config(x.go, cache["upstream"])["config.yml"])["proxy"]
            py_data = _config(x.py, cache["upstream"])
            if "username" not in go_config:
                assert c.UPSTREAM_CREDENTIALS_KEY not in py_data, (x.case.id, cache["upstream"])
                continue
            theirs = json.loads(py_data[c.UPSTREAM_CREDENTIALS_KEY])
            assert (theirs["Username"], theirs["Secret"]) == (go_config["username"], go_config["password"]), \
                (x.case.id, cache["upstream"])
            checked += 1
    assert checked >= 3


def test_the_normalization_keeps_what_matters():
    """What the comparison normalizes cannot hide a change: a changed image, a dropped label, another hash
    in a content-hashed name (one that is not its data's checksum) and another certificate SAN all show."""
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "registry-a", "labels": {"x": ""}},
           "spec": {"template": {"spec": {"containers": [{"name": "registry-cache", "image": "a"}]}}}}
    data = {"config.yml": _b64("version: 0.1\n")}
    secret = {"apiVersion": "v1", "kind": "Secret", "data": data, "metadata": {
        "name": f"registry-a-config-{secret_checksum({'config.yml': b'version: 0.1' + bytes([10])})[:8]}",
        "labels": {c.GC_REFERENCE_LABEL: "true"}}}
    ca = certs.generate_ca()
    pair = certs.generate_server_cert(ca, "s", ["a.kube-system"], ["10.0.0.1"])
    tls = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}, "data": {"tls.crt": _b64(pair.cert_pem)}}
    base: dict[str, Any] = {"shoot": [sts, secret, tls], "seed": [], "status": None, "osc": {}}
    docs = documents(base)
    assert ("shoot", "Secret", "registry-a-config-<checksum>") in docs
    assert differences(docs, documents(copy.deepcopy(base))) == []

    changed = copy.deepcopy(base)
    changed["shoot"][0]["spec"]["template"]["spec"]["containers"][0]["image"] = "b"
    del changed["shoot"][0]["metadata"]["labels"]["x"]
    changed["shoot"][1]["metadata"]["name"] = "registry-a-config-00000000"
    other = certs.generate_server_cert(ca, "s", ["a.kube-system"], ["10.0.0.2"])
    changed["shoot"][2]["data"]["tls.crt"] = _b64(other.cert_pem)
    found = {(d.kind, d.field) for d in differences(docs, documents(changed))}
    assert found == {("StatefulSet", "spec.template.spec.containers[name=registry-cache].image"),
                     ("StatefulSet", 'metadata.labels.x'),
                     ("Secret", "metadata.name"),
                     ("Secret", 'data["tls.crt"][0].ipAddresses')}, found
