"""The admission webhooks' server (extension/webhook/admission.py): what it answers, and over TLS with and without a
client CA."""

from __future__ import annotations

import base64
import json
import socket
import ssl
import urllib.error
import urllib.request

import pytest

from extension.component import certs
from extension.runtime.jsondecode import MAX_DEPTH
from extension.webhook.admission import AdmissionServer, Hook, Refusal, answer, replace_spec_fields


def review(operation="CREATE", resource=("core.gardener.cloud", "v1beta1", "shoots"), obj=None):
    group, version, plural = resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "resource": {"group": group, "version": version, "resource": plural},
        "operation": operation, "object": obj or {"metadata": {"name": "a"}}, "userInfo": {"username": "x"}}}


def refuse(request):
    raise Refusal("no: " + request["object"]["metadata"]["name"], code=422)


SHOOTS = ("core.gardener.cloud", "shoots")


def test_a_refusal_carries_its_message_and_code():
    out = answer(review(), Hook("validate-shoot", SHOOTS, ("CREATE", "UPDATE"), refuse))
    assert out == {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
        "uid": "u-1", "allowed": False, "status": {"code": 422, "message": "no: a"}}}


def test_a_request_the_hook_is_not_for_is_allowed():
    hook = Hook("validate-shoot", SHOOTS, ("CREATE", "UPDATE"), refuse)
    assert answer(review("DELETE"), hook)["response"] == {"uid": "u-1", "allowed": True}
    assert answer(review(resource=("", "v1", "secrets")), hook)["response"] == {"uid": "u-1", "allowed": True}


def test_a_failing_hook_refuses_with_500():
    def broken(request):
        raise KeyError("spec")
    out = answer(review(), Hook("validate-shoot", SHOOTS, ("CREATE",), broken))["response"]
    assert out["allowed"] is False and out["status"] == {"code": 500, "message": "KeyError: 'spec'"}


def test_a_mutating_hook_answers_a_json_patch_of_what_differs():
    osc = {"spec": {"criConfig": {"name": "containerd"}, "files": [{"path": "/a"}], "purpose": "reconcile"}}
    ops = replace_spec_fields(osc, {"criConfig": {"name": "containerd", "containerd": {}}, "files": [{"path": "/a"}]})
    assert ops == [{"op": "add", "path": "/spec/criConfig", "value": {"name": "containerd", "containerd": {}}}]
    assert replace_spec_fields({}, {"files": []}) == [{"op": "add", "path": "/spec", "value": {"files": []}}]
    out = answer(review(resource=("extensions.gardener.cloud", "v1alpha1", "operatingsystemconfigs"), obj=osc),
                 Hook("mutate-osc", ("extensions.gardener.cloud", "operatingsystemconfigs"), ("CREATE",),
                      lambda request: ops))["response"]
    assert out["allowed"] and out["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(out["patch"])) == ops
    nothing = answer(review(resource=("extensions.gardener.cloud", "v1alpha1", "operatingsystemconfigs"), obj=osc),
                     Hook("mutate-osc", ("extensions.gardener.cloud", "operatingsystemconfigs"), ("CREATE",),
                          lambda request: []))["response"]
    assert nothing == {"uid": "u-1", "allowed": True}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pki(tmp_path):
    ca = certs.generate_ca("webhook-ca")
    server = certs.generate_server_cert(ca, "127.0.0.1", [], ["127.0.0.1"])
    client_ca = certs.generate_ca("apiserver-client-ca")
    client = certs.generate_client_cert(client_ca, "kube-apiserver")
    other = certs.generate_client_cert(certs.generate_ca("mallory"), "kube-apiserver")
    files = {}
    for name, pem in [("tls.crt", server.cert_pem), ("tls.key", server.key_pem), ("client-ca.crt", client_ca.cert_pem),
                      ("client.crt", client.cert_pem), ("client.key", client.key_pem),
                      ("other.crt", other.cert_pem), ("other.key", other.key_pem)]:
        (tmp_path / name).write_text(pem)
        files[name] = tmp_path / name
    files["ca"] = ca.cert_pem
    return files


def post(port, path, body, ca_pem, client=None):
    context = ssl.create_default_context(cadata=ca_pem)
    if client is not None:
        context.load_cert_chain(*client)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def test_served_over_tls_only_to_callers_with_a_client_certificate_of_the_ca(pki):
    port = _free_port()
    server = AdmissionServer("127.0.0.1", port, pki["tls.crt"], pki["tls.key"],
                             [Hook("validate-shoot", SHOOTS, ("CREATE",), refuse)],
                             client_ca=str(pki["client-ca.crt"])).start()
    try:
        for client in (None, (pki["other.crt"], pki["other.key"])):
            with pytest.raises((ssl.SSLError, ConnectionResetError, urllib.error.URLError)):
                post(port, "/validate-shoot", review(), pki["ca"], client)
        mine = (pki["client.crt"], pki["client.key"])
        assert post(port, "/validate-shoot?timeout=10s", review(), pki["ca"], mine)["response"]["status"]["code"] == 422
        with pytest.raises(urllib.error.HTTPError) as unknown:
            post(port, "/nothing", review(), pki["ca"], mine)
        assert unknown.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as bad:
            post(port, "/validate-shoot", b"[1, 2]", pki["ca"], mine)
        assert bad.value.code == 400
        deep = review()
        text = json.dumps(deep).replace('"object": {', '"object": {"deep": ' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + ", ")
        out = post(port, "/validate-shoot", text.encode(), pki["ca"], mine)["response"]
        assert out["uid"] == "u-1" and out["allowed"] is False and str(MAX_DEPTH) in out["status"]["message"]
    finally:
        server.stop()


def test_without_a_client_ca_anyone_is_answered(pki):
    port = _free_port()
    server = AdmissionServer("127.0.0.1", port, pki["tls.crt"], pki["tls.key"],
                             [Hook("validate-shoot", SHOOTS, ("CREATE",), lambda request: None)]).start()
    try:
        assert post(port, "/validate-shoot", review(), pki["ca"])["response"] == {"uid": "u-1", "allowed": True}
    finally:
        server.stop()
