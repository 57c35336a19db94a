"""Parity of the ``registry-mirror`` API of ``api/`` with the real Go code of Gardener's extension.

The same harness as :mod:`.test_gardener_parity` (``hack/parity.sh`` builds ``hack/go/parity`` against
``github.com/gardener/gardener-extension-registry-cache`` at the tag of its go.mod); here it answers for the
mirror:

* ``mirror``: decoding a ``MirrorConfig`` with the admission webhook's strict decoder, Gardener's defaults
  (capabilities ``["pull"]``) and ``ValidateMirrorConfig``: "decode failed or not", the decoded object
  (v1alpha1 JSON of Go vs ``MirrorConfig.to_wire()``) and the ordered ``(field, type, detail, value)`` errors;
* ``caBundle``: ``ValidateMirrorHostCABundleSecret`` on a Secret (immutability, the one key ``bundle.crt``,
  Go's ``pem.Decode`` and ``x509.ParseCertificate`` of its first block);
* ``url`` with ``allowPath``: ``ValidateURL`` as it checks a mirror host (a path allowed, no ``.``/``..``);
* ``mirrorShoot``: the whole Shoot validator of ``pkg/admission/validator/mirror`` on a Shoot of the internal
  API, its Secrets in a fake client: the workers, the providerConfig, the CA bundle references followed
  through ``spec.resources``, and no upstream both mirrored and cached.

Intentional differences, compared around (not reported as mismatches):

* Go stops at the first "hard" error of the Shoot validator (a worker without containerd, a config that does
  not decode, a referenced Secret that is not there, a registry-cache providerConfig that is missing or does
  not decode) and returns it as a plain error; Python reports every error at once, each with a field path.
  For those the Python errors must contain the same finding (same words where Go has them);
* decode error messages (pydantic vs the Kubernetes strict decoder);
* nulls in the decoded object (Go prints ``"caBundleSecretReferenceName": null`` and ``"mirrors": null``,
  Python leaves such fields out).

Real mismatches are described in ``MIRROR_KNOWN_MISMATCHES``, and so are the deliberate differences: refusals
added beyond Gardener on purpose, each with its reason (``DELIBERATE`` in its description), as
:mod:`.test_gardener_parity` records them for the caches. Corpus cases showing them are marked
``xfail(strict=True)``, and the generated batches set them aside only when the known class explains them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import strategies as st

from api.admission import validate_mirror_shoot
from api.field import FieldError, Path, ValidationFailed
from api.mirror_validation import decode_and_default_mirror, validate_ca_bundle_secret, validate_mirror_config
from api.secrets import SecretData
from api.validation import validate_url
from extension.component import certs

from .test_gardener_parity import (
    HOST,
    PORTS,
    UPSTREAM,
    URL_PATH,
    GoParity,
    _norm_errors,
    check_batch,
    draw,
    go_parity,
    py_errors,
)

API_VERSION = "mirror.extensions.gardener.cloud/v1alpha1"
CACHE_API_VERSION = "registry.extensions.gardener.cloud/v1alpha3"
PATH = Path("spec", "extensions").index(0).child("providerConfig")
CA_PATH = PATH.child("mirrors").index(0).child("hosts").index(0).child("caBundleSecretReferenceName")

MIRROR_KNOWN_MISMATCHES: dict[str, str] = {
    "mirror-duplicate-reported-as-cached": (
        "with a registry-cache extension in the Shoot, Gardener's validateMirrorConfigAgainstRegistryCache adds "
        "every mirror upstream it has seen to the cached upstreams, so a mirror upstream repeated in the "
        "MirrorConfig is reported twice: as 'Duplicate value' and as 'upstream host ... is also configured as a "
        "registry cache upstream', which it is not; Python reports only the duplicate"),
    # deliberate differences: refusals added beyond Gardener
    "upstream-ca-bundle-file": (
        "DELIBERATE: the mirror upstream 'ca-bundle.pem' is refused, as for caches (test_gardener_parity.py): its "
        "directory in containerd's certs.d would be the file of the caches' CA bundle, which the node agent (and "
        "Gardener's own cache ensurer) writes there"),
}

# The error detail each deliberate refusal starts with: on generated inputs, an error of Python alone with this
# detail is the deliberate difference, set aside like a known mismatch.
MIRROR_DELIBERATE_DETAILS = {
    "upstream-ca-bundle-file": "must not be ca-bundle.pem",
}


def known(name: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"known mismatch {name}: {MIRROR_KNOWN_MISMATCHES[name]}")


# --------------------------------------------------------------------------------------------------------------
# The Python side, in the harness's answer shapes


def py_mirror(raw: Any) -> dict[str, Any]:
    try:
        config = decode_and_default_mirror(raw, PATH)
    except ValidationFailed as exc:
        return {"decodeError": str(exc)}
    return {"errors": py_errors(validate_mirror_config(config, PATH)), "decoded": config.to_wire()}


def py_ca_bundle(immutable: bool | None, data: dict[str, bytes], name: str) -> dict[str, Any]:
    secret = SecretData(namespace="garden-dev", name="ca-bundle", immutable=immutable, data=dict(data))
    return {"errors": py_errors(validate_ca_bundle_secret(secret, CA_PATH, name))}


def shoot_of(req: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The Shoot (v1beta1 dict) and a Secret getter of a ``mirrorShoot`` request."""
    s = req["shoot"]
    shoot = {
        "apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
        "metadata": {"name": "crazy-botany", "namespace": s["namespace"]},
        "spec": {
            "extensions": [{"type": e["type"], **({"providerConfig": e["providerConfig"]}
                                                    if e["providerConfig"] is not None else {})}
                           for e in s["extensions"]],
            "provider": {"workers": [{"name": f"w{i}", "cri": {"name": cri}} for i, cri in enumerate(s["workers"])]},
            "resources": [{"name": r["name"], "resourceRef": {"apiVersion": "v1", "kind": r["kind"],
                                                              "name": r["refName"]}} for r in s["resources"]],
        },
    }
    secrets = {x["name"]: SecretData(s["namespace"], x["name"], x["immutable"],
                                     {k: base64.b64decode(v) for k, v in x["data"].items()})
               for x in req["secrets"]}
    return shoot, lambda namespace, name: secrets.get(name) if namespace == s["namespace"] else None


def py_mirror_shoot(req: dict[str, Any]) -> list[FieldError]:
    shoot, getter = shoot_of(req)
    return validate_mirror_shoot(shoot, getter).errors


# --------------------------------------------------------------------------------------------------------------
# Requests and comparison


def mirror_request(raw: Any) -> dict[str, Any]:
    return {"op": "mirror", "config": raw}


def ca_request(immutable: bool | None, data: dict[str, bytes], name: str = "ca-ref") -> dict[str, Any]:
    return {"op": "caBundle", "name": name,
            "secret": {"immutable": immutable, "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}}


def shoot_request(extensions: list[tuple[str, Any]], workers: list[str] = ("containerd",),
                  resources: list[tuple[str, str, str]] = (),
                  secrets: list[tuple[str, bool | None, dict[str, bytes]]] = ()) -> dict[str, Any]:
    return {"op": "mirrorShoot",
            "shoot": {"namespace": "garden-dev",
                      "extensions": [{"type": t, "providerConfig": pc} for t, pc in extensions],
                      "workers": list(workers),
                      "resources": [{"name": n, "kind": k, "refName": r} for n, k, r in resources]},
            "secrets": [{"name": n, "immutable": imm, "data": {k: base64.b64encode(v).decode() for k, v in d.items()}}
                        for n, imm, d in secrets]}


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _norm_decoded(decoded: Any) -> Any:
    decoded = _drop_nulls(decoded)
    decoded["mirrors"] = decoded.get("mirrors") or []
    for mirror in decoded["mirrors"]:
        mirror["hosts"] = mirror.get("hosts") or []
    return decoded


def _without_deliberate(go_errs: list[Any], py_errs: list[Any]) -> tuple[list[Any], set[str]]:
    """Python's errors without those of a deliberate refusal that Go does not report, and the refusals' names."""
    rest, names = list(py_errs), set()
    for name, detail in MIRROR_DELIBERATE_DETAILS.items():
        extra = [e for e in rest if e[2].startswith(detail) and e not in go_errs]
        if extra:
            rest, names = [e for e in rest if e not in extra], names | {name}
    return rest, names


def mirror_differences(go: dict[str, Any], py: dict[str, Any]) -> list[str]:
    """Every difference (the corpus: a deliberate one shows, and its case is marked)."""
    return explain_mirror(go, py, set_aside=False)[0]


def explain_mirror(go: dict[str, Any], py: dict[str, Any], set_aside: bool = True) -> tuple[list[str], set[str]]:
    """The differences, and (``set_aside``, for generated inputs) the deliberate ones set aside by name."""
    go_failed, py_failed = "decodeError" in go, "decodeError" in py
    if go_failed or py_failed:
        if go_failed != py_failed:
            return [f"decode: Go {'failed' if go_failed else 'succeeded'} ({go.get('decodeError', '')}), Python "
                    f"{'failed' if py_failed else 'succeeded'} ({py.get('decodeError', '')})"], set()
        return [], set()
    diffs = []
    go_errs, py_errs = _norm_errors(go["errors"], True), _norm_errors(py["errors"], False)
    classes: set[str] = set()
    if set_aside:
        rest, deliberate = _without_deliberate(go_errs, py_errs)
        if deliberate and rest == go_errs:
            py_errs, classes = rest, deliberate
    if go_errs != py_errs:
        diffs.append(f"errors: Go {go_errs} != Python {py_errs}")
    if _norm_decoded(go["decoded"]) != _norm_decoded(py["decoded"]):
        diffs.append(f"decoded: Go {go['decoded']} != Python {py['decoded']}")
    return diffs, classes


def error_differences(go: dict[str, Any], py: dict[str, Any]) -> list[str]:
    go_errs, py_errs = _norm_errors(go["errors"], True), _norm_errors(py["errors"], False)
    return [] if go_errs == py_errs else [f"errors: Go {go_errs} != Python {py_errs}"]


def _cache_decodes(raw: Any) -> bool:
    from api.validation import decode_and_default
    try:
        decode_and_default(raw, Path("x"))
        return True
    except ValidationFailed:
        return False


def _hard_error_found(req: dict[str, Any], message: str, py: list[FieldError]) -> bool:
    """Whether Python's errors contain the finding of Go's plain ("hard") error ``message``."""
    details = [e.detail for e in py]
    s = req["shoot"]
    if message == "container runtime needs to be containerd when the registry-mirror extension is enabled":
        return any(e.path.endswith(".cri.name") and e.detail == message for e in py)
    if message.startswith("failed to get secret "):
        return message in details
    if message == "providerConfig is not available for registry-cache extension":
        return any(e["type"] == "registry-cache" and e["providerConfig"] is None for e in s["extensions"])
    if message.startswith("failed to decode providerConfig: "):
        mirror_failed = any(e.path.startswith(str(PATH)) and e.type.value in ("Required value", "Unsupported value",
                                                                              "Forbidden", "Invalid value")
                            for e in py) and _mirror_failed_to_decode(req)
        cache_failed = any(e["type"] == "registry-cache" and e["providerConfig"] is not None
                           and not _cache_decodes(e["providerConfig"]) for e in s["extensions"])
        return mirror_failed or cache_failed
    return False


def _mirror_failed_to_decode(req: dict[str, Any]) -> bool:
    mirror = next(e for e in req["shoot"]["extensions"] if e["type"] == "registry-mirror")
    return "decodeError" in py_mirror(mirror["providerConfig"])


def shoot_differences(req: dict[str, Any], go: dict[str, Any], py: list[FieldError]) -> tuple[list[str], set[str]]:
    if "error" in go:
        if _hard_error_found(req, go["error"], py):
            return [], set()
        return [f"Go refused with {go['error']!r}; Python's errors do not say so: {[str(e) for e in py]}"], set()
    go_errs, py_errs = _norm_errors(go["errors"], True), _norm_errors(py_errors(py), False)
    if go_errs == py_errs:
        return [], set()
    py_errs, classes = _without_deliberate(go_errs, py_errs)
    if classes and go_errs == py_errs:
        return [], classes
    cached_dup = [e for e in go_errs if e not in py_errs and "is also configured as a registry cache upstream" in e[2]]
    if cached_dup and [e for e in go_errs if e not in cached_dup] == py_errs and all(
            any(p[0] == e[0] and p[1] == "FieldValueDuplicate" for p in py_errs) for e in cached_dup):
        return [], classes | {"mirror-duplicate-reported-as-cached"}
    return [f"errors: Go {go_errs} != Python {py_errs}"], set()


# --------------------------------------------------------------------------------------------------------------
# The corpus


def mconf(*mirrors: Any, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "MirrorConfig", "mirrors": list(mirrors), **extra}


def mirror(upstream: Any = "docker.io", *hosts: Any, **fields: Any) -> dict[str, Any]:
    return {"upstream": upstream, "hosts": list(hosts) if hosts else [{"host": "https://mirror.gcr.io"}], **fields}


def host(url: Any = "https://mirror.gcr.io", **fields: Any) -> dict[str, Any]:
    return {"host": url, **fields}


MIRROR_CASES = [
    pytest.param(mconf(mirror()), id="valid-minimal"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io", capabilities=["pull"])),
                       mirror("quay.io", host("https://private-mirror.internal",
                                              caBundleSecretReferenceName="private-mirror-ca-bundle")),
                       mirror("registry.k8s.io", host("https://harbor.example.com/v2/k8s",
                                                      capabilities=["pull", "resolve"], overridePath=True))),
                 id="valid-docs-example"),
    pytest.param(mconf(mirror("docker.io", host("https://a.example.com"), host("http://b.example.com:5000"))),
                 id="valid-two-hosts"),
    pytest.param(mconf(mirror("my-registry.io:5000", host("https://10.0.0.1:8443/"))), id="valid-port-ip"),
    pytest.param(mconf(mirror("docker.io", host(overridePath=False))), id="override-path-false"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=[]))), id="capabilities-empty-defaulted"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=None))), id="capabilities-null-defaulted"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=["resolve"]))), id="capabilities-resolve-only"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=["push"]))), id="capabilities-unsupported"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=["Pull"]))), id="capabilities-case"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=[""]))), id="capabilities-empty-string"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=[None]))), id="capabilities-null-entry"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=["pull", "pull"]))), id="capabilities-duplicate"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=["push", "push", "pull"]))),
                 id="capabilities-duplicate-unsupported"),
    pytest.param(mconf(mirror("docker.io", host(capabilities="pull"))), id="capabilities-not-a-list"),
    pytest.param(mconf(), id="mirrors-empty"),
    pytest.param({"apiVersion": API_VERSION, "kind": "MirrorConfig"}, id="mirrors-missing"),
    pytest.param(mconf(None), id="mirror-null"),
    pytest.param({"apiVersion": API_VERSION, "kind": "MirrorConfig", "mirrors": None}, id="mirrors-null"),
    pytest.param(mconf({"upstream": "docker.io"}), id="hosts-missing"),
    pytest.param(mconf({"upstream": "docker.io", "hosts": []}), id="hosts-empty"),
    pytest.param(mconf({"upstream": "docker.io", "hosts": None}), id="hosts-null"),
    pytest.param(mconf({"upstream": "docker.io", "hosts": [None]}), id="host-null"),
    pytest.param(mconf({"hosts": [host()]}), id="upstream-missing"),
    pytest.param(mconf(mirror(None)), id="upstream-null"),
    pytest.param(mconf(mirror("https://docker.io")), id="upstream-scheme"),
    pytest.param(mconf(mirror("Docker.io")), id="upstream-uppercase"),
    pytest.param(mconf(mirror("docker.io:0")), id="upstream-port-0"),
    pytest.param(mconf(mirror("docker.io"), mirror("docker.io")), id="upstream-duplicate"),
    pytest.param(mconf(mirror("ca-bundle.pem")), id="upstream-ca-bundle-file", marks=known("upstream-ca-bundle-file")),
    pytest.param(mconf(mirror("ca-bundle.pem:5000")), id="upstream-ca-bundle-file-with-port"),
    pytest.param(mconf(mirror("ca-bundle.pem", host(capabilities=["push"]))), id="upstream-ca-bundle-file-and-more",
                 marks=known("upstream-ca-bundle-file")),
    pytest.param(mconf(mirror("docker.io", host(""))), id="host-empty"),
    pytest.param(mconf(mirror("docker.io", host(None))), id="host-null-value"),
    pytest.param(mconf(mirror("docker.io", host("mirror.gcr.io"))), id="host-no-scheme"),
    pytest.param(mconf(mirror("docker.io", host("ftp://mirror.gcr.io"))), id="host-ftp"),
    pytest.param(mconf(mirror("docker.io", host("https://u:p@mirror.gcr.io"))), id="host-userinfo"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io?a=b"))), id="host-query"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io#x"))), id="host-fragment"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/v2/../x"))), id="host-dotdot"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/.."))), id="host-dotdot-end"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/./x"))), id="host-dot"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/a/./../b"))), id="host-dot-and-dotdot"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/%2e%2e/x"))), id="host-dotdot-escaped"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/%2E"))), id="host-dot-escaped"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/a..b/.c"))), id="host-dots-in-names"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io/%zz"))), id="host-bad-escape"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io//"))), id="host-double-slash"),
    pytest.param(mconf(mirror("docker.io", host("https://[::1]:5000/v2"))), id="host-ipv6"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror_gcr.io"))), id="host-underscore"),
    pytest.param(mconf(mirror("docker.io", host("https://mirror.gcr.io:99999"))), id="host-bad-port"),
    pytest.param(mconf(mirror("docker.io", host(), host()), ), id="host-duplicate"),
    pytest.param(mconf(mirror("docker.io", host("https://a.io/"), host("https://a.io"))), id="host-trailing-slash"),
    pytest.param(mconf(mirror("docker.io", host(caBundleSecretReferenceName=""))), id="ca-ref-empty"),
    pytest.param(mconf(mirror("docker.io", host(caBundleSecretReferenceName=None))), id="ca-ref-null"),
    pytest.param(mconf(mirror("docker.io", host(overridePath=None))), id="override-path-null"),
    pytest.param(mconf(mirror("docker.io", host(overridePath="true"))), id="override-path-string"),
    pytest.param(mconf(mirror("docker.io", host(foo=1))), id="unknown-host-field"),
    pytest.param(mconf(mirror("docker.io", foo=1)), id="unknown-mirror-field"),
    pytest.param(mconf(mirror(), foo=1), id="unknown-top-level"),
    pytest.param({**mconf(mirror()), "kind": None}, id="kind-null"),
    pytest.param({"apiVersion": API_VERSION, "mirrors": [mirror()]}, id="kind-missing"),
    pytest.param({**mconf(mirror()), "kind": "RegistryConfig"}, id="kind-wrong"),
    pytest.param({**mconf(mirror()), "apiVersion": "mirror.extensions.gardener.cloud/v1alpha3"},
                 id="api-version-of-the-docs-typo"),
    pytest.param({**mconf(mirror()), "apiVersion": CACHE_API_VERSION}, id="api-version-cache"),
    pytest.param({"kind": "MirrorConfig", "mirrors": [mirror()]}, id="api-version-missing"),
    pytest.param(mconf(mirror(1)), id="upstream-number"),
    pytest.param(mconf(mirror("docker.io", host(1))), id="host-number"),
    pytest.param(mconf(mirror("docker.io", host(capabilities=[1]))), id="capability-number"),
    pytest.param(mconf(mirror("docker.io", host(caBundleSecretReferenceName=1))), id="ca-ref-number"),
    pytest.param(mconf(mirror("docker.io", "x")), id="host-not-an-object"),
    pytest.param(mconf("x"), id="mirror-not-an-object"),
    pytest.param({**mconf(), "mirrors": {}}, id="mirrors-not-a-list"),
    pytest.param(mconf(mirror("a" * 300 + ".io", host("https://" + "a" * 300 + ".io"))), id="too-long"),
    pytest.param(mconf(mirror("docker.io\n", host("https://mirror.gcr.io\n"))), id="trailing-newline"),
    pytest.param(mconf(mirror("", host("", capabilities=["x", "x"])), mirror("")), id="everything-wrong"),
]


def _cert_pem() -> bytes:
    return certs.generate_ca("parity-ca").cert_pem.encode()


CERT = _cert_pem()
CERT2 = _cert_pem()
CERT_BODY = CERT.split(b"\n", 1)[1].rsplit(b"-----END", 1)[0]
KEY = certs.generate_ca("parity-key").key_pem.encode()


def _ca_case(case_id: str, immutable: bool | None, data: dict[str, bytes]) -> Any:
    return pytest.param(immutable, data, id=case_id)


CA_CASES = [
    _ca_case("valid", True, {"bundle.crt": CERT}),
    _ca_case("valid-two-certs", True, {"bundle.crt": CERT + CERT2}),
    _ca_case("valid-leading-text", True, {"bundle.crt": b"my CA\n" + CERT}),
    _ca_case("valid-crlf", True, {"bundle.crt": CERT.replace(b"\n", b"\r\n")}),
    _ca_case("valid-trailing-spaces", True, {"bundle.crt": CERT.replace(b"-----\n", b"-----  \t\n")}),
    _ca_case("valid-no-final-newline", True, {"bundle.crt": CERT.rstrip(b"\n")}),
    _ca_case("valid-indented-body", True, {"bundle.crt": CERT.replace(b"\nM", b"\n  M")}),
    _ca_case("valid-header", True, {"bundle.crt": CERT.replace(b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\n\n", 1)}),
    _ca_case("mutable", False, {"bundle.crt": CERT}),
    _ca_case("immutable-unset", None, {"bundle.crt": CERT}),
    _ca_case("missing-key", True, {"ca.crt": CERT}),
    _ca_case("no-data", True, {}),
    _ca_case("extra-key", True, {"bundle.crt": CERT, "other": b"x"}),
    _ca_case("everything-wrong", False, {"ca.crt": CERT, "other": b"x"}),
    _ca_case("empty", True, {"bundle.crt": b""}),
    _ca_case("whitespace", True, {"bundle.crt": b" \n\t\n"}),
    _ca_case("not-pem", True, {"bundle.crt": b"hello"}),
    _ca_case("private-key", True, {"bundle.crt": KEY}),
    _ca_case("key-then-cert", True, {"bundle.crt": KEY + CERT}),
    _ca_case("cert-then-key", True, {"bundle.crt": CERT + KEY}),
    _ca_case("trusted-certificate-type", True,
             {"bundle.crt": CERT.replace(b"CERTIFICATE", b"TRUSTED CERTIFICATE")}),
    _ca_case("lowercase-type", True, {"bundle.crt": CERT.replace(b"CERTIFICATE", b"certificate")}),
    _ca_case("end-type-differs", True, {"bundle.crt": CERT.replace(b"END CERTIFICATE", b"END X509 CRL")}),
    _ca_case("broken-then-valid", True,
             {"bundle.crt": CERT.replace(b"END CERTIFICATE", b"END X509 CRL") + CERT2}),
    _ca_case("no-end", True, {"bundle.crt": CERT.rsplit(b"-----END", 1)[0]}),
    _ca_case("bad-base64", True, {"bundle.crt": CERT.replace(CERT_BODY[:8], b"!!!!!!!!")}),
    _ca_case("short-base64", True, {"bundle.crt": CERT.replace(CERT_BODY[:4], b"", 1)}),
    _ca_case("der-garbage", True, {"bundle.crt": b"-----BEGIN CERTIFICATE-----\n"
                                   + base64.encodebytes(b"\x30\x03\x02\x01\x01" * 20)
                                   + b"-----END CERTIFICATE-----\n"}),
    _ca_case("empty-block", True, {"bundle.crt": b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"}),
    _ca_case("text-after-end", True, {"bundle.crt": CERT.rstrip(b"\n") + b" trailing\n"}),
    _ca_case("type-without-dashes", True, {"bundle.crt": CERT.replace(b"BEGIN CERTIFICATE-----",
                                                                      b"BEGIN CERTIFICATE", 1)}),
    _ca_case("der-not-pem", True, {"bundle.crt": base64.b64decode(b"".join(CERT_BODY.split()))}),
    _ca_case("invalid-utf8", True, {"bundle.crt": b"\xff\xfe" + CERT}),
]

MIRROR = mconf(mirror("docker.io", host("https://mirror.gcr.io")))
MIRROR_CA = mconf(mirror("docker.io", host("https://private-mirror.internal", caBundleSecretReferenceName="ca")))
CACHE_DOCKER = {"apiVersion": CACHE_API_VERSION, "kind": "RegistryConfig", "caches": [{"upstream": "docker.io"}]}
CACHE_GHCR = {"apiVersion": CACHE_API_VERSION, "kind": "RegistryConfig", "caches": [{"upstream": "ghcr.io"}]}
CA_REF = [("ca", "Secret", "ca-v1")]
GOOD_CA = [("ca-v1", True, {"bundle.crt": CERT})]

SHOOT_CASES = [
    pytest.param(shoot_request([("registry-mirror", MIRROR)]), id="valid"),
    pytest.param(shoot_request([("foo", MIRROR)]), id="no-mirror-extension"),
    pytest.param(shoot_request([("registry-mirror", MIRROR)], workers=["containerd", "docker"]), id="worker-docker"),
    pytest.param(shoot_request([("registry-mirror", MIRROR)], workers=[]), id="no-workers"),
    pytest.param(shoot_request([("registry-mirror", None)]), id="provider-config-null"),
    pytest.param(shoot_request([("registry-mirror", None)], workers=["gvisor"]), id="provider-config-null-and-worker"),
    pytest.param(shoot_request([("registry-mirror", {"bar": "baz"})]), id="provider-config-not-decodable"),
    pytest.param(shoot_request([("registry-mirror", mconf(mirror("docker.io", host(capabilities=["push"]))))]),
                 id="config-invalid"),
    pytest.param(shoot_request([("registry-mirror", mconf(mirror("docker.io", host(capabilities=["", None]),
                                                                 host("https://b.io", capabilities=["x", "x"]))))]),
                 id="identical-errors-once"),  # the webhook's ToAggregate drops repeated errors (found generated)
    pytest.param(shoot_request([("registry-mirror", MIRROR), ("registry-cache", CACHE_DOCKER)]),
                 id="mirrored-and-cached"),
    pytest.param(shoot_request([("registry-cache", CACHE_DOCKER), ("registry-mirror", MIRROR)]),
                 id="cache-first-mirrored-and-cached"),
    pytest.param(shoot_request([("registry-mirror", MIRROR), ("registry-cache", CACHE_GHCR)]),
                 id="mirrored-and-other-cached"),
    pytest.param(shoot_request([("registry-mirror", mconf(mirror("docker.io"), mirror("ghcr.io"),
                                                          mirror("quay.io"))),
                                ("registry-cache", {**CACHE_GHCR, "caches": [{"upstream": "quay.io"},
                                                                             {"upstream": "docker.io"}]})]),
                 id="several-mirrored-and-cached"),
    pytest.param(shoot_request([("registry-mirror", mconf(mirror("docker.io"), mirror("docker.io"))),
                                ("registry-cache", CACHE_GHCR)]),
                 id="mirror-duplicate-with-cache", marks=known("mirror-duplicate-reported-as-cached")),
    pytest.param(shoot_request([("registry-mirror", mconf(mirror("docker.io"), mirror("docker.io")))]),
                 id="mirror-duplicate-without-cache"),
    pytest.param(shoot_request([("registry-mirror", mconf(mirror("ca-bundle.pem")))]), id="upstream-ca-bundle-file",
                 marks=known("upstream-ca-bundle-file")),
    pytest.param(shoot_request([("registry-mirror", MIRROR), ("registry-cache", None)]), id="cache-config-null"),
    pytest.param(shoot_request([("registry-mirror", MIRROR), ("registry-cache", {"bar": "baz"})]),
                 id="cache-config-not-decodable"),
    pytest.param(shoot_request([("registry-mirror", MIRROR),
                                ("registry-cache", {**CACHE_DOCKER, "caches": [{"upstream": "https://docker.io"}]})]),
                 id="cache-config-invalid-but-decodable"),
    pytest.param(shoot_request([("registry-mirror", MIRROR_CA)], resources=CA_REF, secrets=GOOD_CA), id="ca-valid"),
    pytest.param(shoot_request([("registry-mirror", MIRROR_CA)], resources=[], secrets=GOOD_CA), id="ca-ref-missing"),
    pytest.param(shoot_request([("registry-mirror", MIRROR_CA)], resources=[("ca", "ConfigMap", "ca-v1")],
                               secrets=GOOD_CA), id="ca-ref-wrong-kind"),
    pytest.param(shoot_request([("registry-mirror", MIRROR_CA)], resources=CA_REF), id="ca-secret-missing"),
    pytest.param(shoot_request([("registry-mirror", MIRROR_CA)], resources=CA_REF,
                               secrets=[("ca-v1", False, {"other": b"x"})]), id="ca-secret-invalid"),
    pytest.param(shoot_request([("registry-mirror", MIRROR_CA)], resources=CA_REF,
                               secrets=[("ca-v1", True, {"bundle.crt": b"nope"})]), id="ca-secret-not-pem"),
    pytest.param(shoot_request([("registry-mirror", mconf(
        mirror("docker.io", host("https://a.io", caBundleSecretReferenceName="ca"),
               host("https://b.io", caBundleSecretReferenceName="nope")),
        mirror("quay.io", host("https://c.io", caBundleSecretReferenceName="ca"))))],
        resources=CA_REF, secrets=GOOD_CA), id="ca-several-hosts"),
    pytest.param(shoot_request([("registry-mirror", mconf(
        mirror("docker.io", host("https://a.io", caBundleSecretReferenceName="bad"),
               host("https://b.io", caBundleSecretReferenceName="missing"),
               host("https://c.io", caBundleSecretReferenceName="ca"))))],
        resources=[*CA_REF, ("bad", "Secret", "bad-v1"), ("missing", "Secret", "missing-v1")],
        secrets=[*GOOD_CA, ("bad-v1", None, {})]), id="ca-errors-then-missing-secret"),
]


# --------------------------------------------------------------------------------------------------------------
# Corpus tests


def _by_request(go_parity: GoParity, requests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {json.dumps(r, sort_keys=True): a for r, a in zip(requests, go_parity.run(requests))}


@pytest.fixture(scope="module")
def go_mirror_answers(go_parity: GoParity) -> dict[str, dict[str, Any]]:
    return _by_request(go_parity, [mirror_request(p.values[0]) for p in MIRROR_CASES])


@pytest.fixture(scope="module")
def go_ca_answers(go_parity: GoParity) -> dict[str, dict[str, Any]]:
    return _by_request(go_parity, [ca_request(p.values[0], p.values[1]) for p in CA_CASES])


@pytest.fixture(scope="module")
def go_shoot_answers(go_parity: GoParity) -> dict[str, dict[str, Any]]:
    return _by_request(go_parity, [p.values[0] for p in SHOOT_CASES])


@pytest.mark.parametrize("raw", MIRROR_CASES)
def test_mirror_corpus(go_mirror_answers, raw):
    go = go_mirror_answers[json.dumps(mirror_request(raw), sort_keys=True)]
    py = py_mirror(raw)
    assert mirror_differences(go, py) == [], f"\nGo:     {go}\nPython: {py}"


@pytest.mark.parametrize("immutable,data", CA_CASES)
def test_ca_bundle_corpus(go_ca_answers, immutable, data):
    go = go_ca_answers[json.dumps(ca_request(immutable, data), sort_keys=True)]
    py = py_ca_bundle(immutable, data, "ca-ref")
    assert error_differences(go, py) == [], f"\nGo:     {go}\nPython: {py}"


@pytest.mark.parametrize("req", SHOOT_CASES)
def test_mirror_shoot_corpus(go_shoot_answers, req):
    go = go_shoot_answers[json.dumps(req, sort_keys=True)]
    py = py_mirror_shoot(req)
    diffs, classes = shoot_differences(req, go, py)
    assert not classes, f"explained by {classes} only"
    assert diffs == [], f"\nGo:     {go}\nPython: {[str(e) for e in py]}"


def test_mirror_corpus_covers_decode_validation_and_admission(go_mirror_answers, go_ca_answers, go_shoot_answers):
    """The corpora exercise every stage; a harness that fails (or passes) everything must not pass silently."""
    mirrors = list(go_mirror_answers.values())
    decoded = [a for a in mirrors if "decodeError" not in a]
    assert len(mirrors) - len(decoded) >= 10 and sum(1 for a in decoded if a["errors"]) >= 30
    assert sum(1 for a in decoded if not a["errors"]) >= 8
    types = {e["type"] for a in decoded for e in a["errors"]}
    assert {"FieldValueRequired", "FieldValueInvalid", "FieldValueDuplicate", "FieldValueNotSupported"} <= types
    details = {e["detail"] for a in decoded for e in a["errors"]}
    assert {"url path must not contain '..'", "url path must not contain '.'"} <= details
    cas = list(go_ca_answers.values())
    assert sum(1 for a in cas if not a["errors"]) >= 6 and sum(1 for a in cas if a["errors"]) >= 15
    assert any(e["detail"] == "the CA bundle is not a valid PEM-encoded certificate" for a in cas for e in a["errors"])
    shoots = list(go_shoot_answers.values())
    assert sum(1 for a in shoots if "error" in a) >= 5
    assert any("is also configured as a registry cache upstream" in e["detail"]
               for a in shoots for e in a.get("errors", []))


# --------------------------------------------------------------------------------------------------------------
# Generated inputs


VALID_HOST_URL = st.sampled_from(["https://mirror.gcr.io", "https://a.example.com/v2/k8s", "http://10.0.0.1:5000",
                                  "https://harbor.example.com:8443/", "https://b.example.com/a..b/.c"])


def _host_url() -> st.SearchStrategy[str]:
    return st.one_of(VALID_HOST_URL, st.builds(
        lambda s, h, p, path, tail: s + h + p + path + tail,
        st.sampled_from(["https://", "http://", "https://", "https://", "", "ftp://", "HTTPS://"]),
        st.one_of(HOST, HOST, st.sampled_from(["[::1]", "a_b.io", "", "é.io"])),
        st.sampled_from(["", "", "", "", *PORTS]),
        st.one_of(st.sampled_from(["", "", "/", "/v2", "/v2/k8s", "//"]),
                  st.lists(st.sampled_from(["a", ".", "..", "%2e", "%2E%2e", "...", ".a", "a.", "%zz", "v2", ""]),
                           min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))),
        st.sampled_from(["", "", "", "", "", "?x=1", "#f", "\n"]),
    ))


CAPABILITY = st.sampled_from(["pull", "resolve", "pull", "resolve", "push", "", "Pull", None])
HOST_ENTRY = st.fixed_dictionaries(
    {"host": _host_url()},
    optional={
        "capabilities": st.one_of(st.lists(CAPABILITY, max_size=3), st.sampled_from([["pull"], ["pull", "resolve"]]),
                                  st.none()),
        "caBundleSecretReferenceName": st.sampled_from(["ca", "other", "", None]),
        "overridePath": st.sampled_from([True, False, None]),
    })
MIRROR_ENTRY = st.fixed_dictionaries(
    {"upstream": st.one_of(UPSTREAM, *[st.sampled_from(["docker.io", "ghcr.io", "quay.io", "registry.k8s.io:5000"])] * 3,
                           st.just("ca-bundle.pem"))},
    optional={"hosts": st.one_of(st.lists(HOST_ENTRY, min_size=1, max_size=3), st.lists(HOST_ENTRY, max_size=3),
                                 st.lists(st.sampled_from([{"host": "https://a.io"}, {"host": "https://a.io/"}]),
                                          max_size=3),
                                 st.none())})
VALID_MIRROR_ENTRY = st.fixed_dictionaries(
    {"upstream": st.sampled_from(["docker.io", "ghcr.io", "quay.io", "registry.k8s.io:5000"]),
     "hosts": st.lists(st.fixed_dictionaries({"host": VALID_HOST_URL},
                                             optional={"capabilities": st.sampled_from([["pull"], ["resolve", "pull"]]),
                                                       "overridePath": st.booleans()}),
                       min_size=1, max_size=2, unique_by=lambda h: h["host"])})
JUNK = st.sampled_from([1, True, None, "x", [], {}])


def _spoil(cfg: dict[str, Any], where: int, key: str, value: Any) -> dict[str, Any]:
    cfg = json.loads(json.dumps(cfg))
    mirrors = cfg.get("mirrors") or []
    if key in ("apiVersion", "kind", "mirrors", "extra"):
        cfg[key] = value
    elif mirrors:
        m = mirrors[where % len(mirrors)]
        if key.startswith("hosts.") and isinstance(m.get("hosts"), list) and m["hosts"]:
            m["hosts"][where % len(m["hosts"])][key.split(".", 1)[1]] = value
        else:
            m[key.split(".", 1)[0]] = value
    return cfg


MIRROR_CONFIG = st.one_of(
    *[st.lists(MIRROR_ENTRY, max_size=3).map(lambda ms: mconf(*ms))] * 8,
    st.lists(VALID_MIRROR_ENTRY, min_size=1, max_size=2, unique_by=lambda m: m["upstream"]).map(lambda ms: mconf(*ms)),
    st.builds(_spoil, st.lists(MIRROR_ENTRY, min_size=1, max_size=3).map(lambda ms: mconf(*ms)), st.integers(0, 5),
              st.sampled_from(["apiVersion", "kind", "mirrors", "extra", "upstream", "hosts", "hosts.host",
                               "hosts.capabilities", "hosts.overridePath", "hosts.caBundleSecretReferenceName",
                               "hosts.foo"]), JUNK),
)


def test_generated_mirror_configs(go_parity):
    requests = [mirror_request(cfg) for cfg in draw(MIRROR_CONFIG)]
    answers = go_parity.run(requests)
    seen = check_batch([(req, *explain_mirror(go, py_mirror(req["config"]))) for req, go in zip(requests, answers)])
    assert set(seen) == set(MIRROR_DELIBERATE_DETAILS), "the grammar should reach the deliberate refusals"
    decoded = [a for a in answers if "decodeError" not in a]
    assert len(decoded) > len(requests) // 3, "the grammar should produce many decodable configs"
    assert sum(1 for a in decoded if not a["errors"]) >= 5, "the grammar should produce valid configs too"


def test_generated_mirror_host_urls(go_parity):
    """``ValidateURL(..., allowPath=true)`` as it checks a mirror host; the harness reports on ``remoteURL``."""
    requests = [{"op": "url", "url": u, "allowPath": True} for u in draw(_host_url())]
    answers = go_parity.run(requests)
    check_batch([(req, error_differences(go, {"errors": py_errors(validate_url(URL_PATH, req["url"], True))}),
                  set()) for req, go in zip(requests, answers)])
    assert sum(1 for a in answers if not a["errors"]) > 10, "the grammar should produce valid mirror hosts too"
    assert any("must not contain '..'" in e["detail"] for a in answers for e in a["errors"])


PEM_PIECE = st.sampled_from([
    CERT, CERT2, KEY, b"", b"\n", b"junk\n", b"-----BEGIN CERTIFICATE-----\n", b"-----END CERTIFICATE-----\n",
    CERT.replace(b"\n", b"\r\n"), CERT.replace(b"CERTIFICATE", b"X509 CRL"), CERT_BODY, CERT[:200], CERT[200:],
    b"Proc-Type: 4,ENCRYPTED\n", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
])
CA_SECRET = st.tuples(
    st.sampled_from([True, True, True, False, None]),
    st.one_of(
        st.fixed_dictionaries({"bundle.crt": st.lists(PEM_PIECE, max_size=4).map(b"".join)}),
        st.fixed_dictionaries({}, optional={"bundle.crt": st.lists(PEM_PIECE, max_size=3).map(b"".join),
                                            "ca.crt": st.just(CERT), "x": st.just(b"x")}),
    ),
)


def test_generated_ca_bundles(go_parity):
    cases = draw(CA_SECRET)
    requests = [ca_request(immutable, data) for immutable, data in cases]
    answers = go_parity.run(requests)
    check_batch([(req, error_differences(go, py_ca_bundle(immutable, data, "ca-ref")), set())
                 for (immutable, data), req, go in zip(cases, requests, answers)])
    assert sum(1 for a in answers if not a["errors"]) > 10, "the grammar should produce valid bundles too"


SHOOT = st.builds(
    lambda mirrors, cached, first, workers, refs, secret: shoot_request(
        ([("registry-cache", {**CACHE_DOCKER, "caches": [{"upstream": u} for u in cached]})] if cached is not None
         and first else [])
        + [("registry-mirror", mconf(*mirrors))]
        + ([("registry-cache", {**CACHE_DOCKER, "caches": [{"upstream": u} for u in cached]})] if cached is not None
           and not first else []),
        workers=workers, resources=refs, secrets=secret),
    st.lists(MIRROR_ENTRY, min_size=0, max_size=3),
    st.one_of(st.none(), st.lists(st.sampled_from(["docker.io", "ghcr.io", "quay.io", "a.b"]), max_size=3,
                                  unique=True)),
    st.booleans(),
    st.sampled_from([["containerd"], ["containerd"], ["containerd"], [], ["containerd", "docker"]]),
    st.sampled_from([[], CA_REF, CA_REF, [("ca", "ConfigMap", "ca-v1")], [*CA_REF, ("other", "Secret", "nope")]]),
    st.sampled_from([[], GOOD_CA, GOOD_CA, [("ca-v1", False, {"bundle.crt": b"x", "y": b"z"})]]),
)


def test_generated_mirror_shoots(go_parity):
    requests = draw(SHOOT)
    answers = go_parity.run(requests)
    seen = check_batch([(req, *shoot_differences(req, go, py_mirror_shoot(req))) for req, go in zip(requests, answers)])
    assert sum(1 for a in answers if "error" in a) > 5, "the grammar should provoke hard errors"
    assert sum(1 for a in answers if a.get("errors") == []) > 5, "the grammar should produce valid Shoots too"
    assert set(seen) <= set(MIRROR_KNOWN_MISMATCHES)
