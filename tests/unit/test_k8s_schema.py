"""Every rendered Kubernetes object validates against the Kubernetes OpenAPI schema (strict: no unknown fields)."""

import pytest

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")

from api.secrets import Credentials  # noqa: E402
from api.validation import decode_and_default  # noqa: E402
from extension.component.certs import KeyPair  # noqa: E402
from extension.component.objects import RenderOptions, render_shoot  # noqa: E402

from .helpers import PC, config  # noqa: E402

KUBERNETES_VERSION = "1.34.0"
TLS = KeyPair("cert", "key")


@pytest.mark.parametrize("caches", [
    [{"upstream": "docker.io", "volume": {"size": "100Gi"}}, {"upstream": "ghcr.io"},
     {"upstream": "quay.io", "garbageCollection": {"ttl": "0s"}, "secretReferenceName": "q"},
     {"upstream": "my-registry.io:5000", "remoteURL": "http://my-registry.io:5000", "serviceNameSuffix": "static"}],
    [{"upstream": "a.io", "http": {"tls": False}, "highAvailability": {"enabled": True},
      "proxy": {"httpProxy": "http://p:3128", "httpsProxy": "http://p:3128"},
      "volume": {"storageClassName": "premium", "size": "1.5Gi"}}],
])
def test_rendered_objects_validate(caches):
    cfg = decode_and_default(config(*caches), PC)
    out = render_shoot(cfg, {"quay.io": Credentials("u", "p")}, {c.upstream: TLS for c in cfg.caches},
                       RenderOptions(vpa=False))
    for obj in out.objects:
        kubernetes_validate.validate(obj.obj, KUBERNETES_VERSION, strict=True)


def test_the_check_can_fail():
    cfg = decode_and_default(config({"upstream": "a.io"}), PC)
    sts = render_shoot(cfg, tls={"a.io": TLS}).by_kind("StatefulSet")[0]
    sts["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)
