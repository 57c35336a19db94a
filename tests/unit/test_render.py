"""Rendering: golden files for the docs example, and the shape of every object."""

import base64
import json
import os
import tomllib
from pathlib import Path

import pytest
import yaml

from api.secrets import Credentials
from api.validation import decode_and_default
from extension.component.certs import KeyPair
from extension.component.containerd import hosts_toml_for_status, render_hosts_toml
from extension.component.objects import (
    RenderOptions,
    config_files,
    endpoint,
    provider_status,
    render_config_yml,
    render_credential_helper,
    render_shoot,
    unique_name,
)

from .helpers import PC, config

GOLDEN = Path(__file__).parent / "golden" / "docs-example"
UPDATE = os.environ.get("REGISTRY_CACHE_UPDATE_GOLDEN") == "1"
DOCS_EXAMPLE = config(
    {"upstream": "docker.io", "volume": {"size": "100Gi"}},
    {"upstream": "ghcr.io"},
    {"upstream": "quay.io", "garbageCollection": {"ttl": "0s"}, "secretReferenceName": "quay-credentials"},
    {"upstream": "my-registry.io:5000", "remoteURL": "http://my-registry.io:5000", "serviceNameSuffix": "static-name"},
)
CREDS = {"quay.io": Credentials("example+robot", "not-a-real-password")}
FAKE_TLS = KeyPair("-----BEGIN CERTIFICATE-----\nfixture\n-----END CERTIFICATE-----\n",
                   "-----BEGIN PRIVATE KEY-----\nfixture\n-----END PRIVATE KEY-----\n")
ENDPOINTS = {"docker.io": "10.4.0.12", "ghcr.io": "10.4.0.13", "quay.io": "10.4.0.14", "my-registry.io:5000": "10.4.0.15"}


def docs_config():
    return decode_and_default(DOCS_EXAMPLE, PC)


def rendered():
    cfg = docs_config()
    return cfg, render_shoot(cfg, CREDS, {c.upstream: FAKE_TLS for c in cfg.caches})


def check_golden(name: str, text: str):
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with REGISTRY_CACHE_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def test_golden_config_yml():
    for cache in docs_config().caches:
        check_golden(f"config/{cache.upstream}.yml", render_config_yml(cache))


def test_golden_shoot_objects():
    _, out = rendered()
    check_golden("shoot-objects.yaml", "---\n".join(o.text for o in out.objects))


def test_golden_hosts_toml():
    cfg = docs_config()
    status = provider_status([(c.upstream, endpoint("https", ENDPOINTS[c.upstream]),
                               c.remote_url or ("https://registry-1.docker.io" if c.upstream == "docker.io"
                                                else f"https://{c.upstream}")) for c in cfg.caches],
                             "ca-extension-registry-cache-bundle")
    for upstream, text in hosts_toml_for_status(status).items():
        check_golden(f"hosts/{upstream}/hosts.toml", text)


GOLDEN_FRONT = Path(__file__).parent / "golden" / "docs-example-front"
FRONT_IMAGE = "registry.example.org/registry-cache:0.1.0"


def test_golden_with_the_front():
    """The docs example as `run --front-image` renders it: distribution's config.yml for the loopback behind the
    front, and the StatefulSet with the front container."""
    cfg = docs_config()
    for cache in cfg.caches:
        check_golden(f"../{GOLDEN_FRONT.name}/config/{cache.upstream}.yml", render_config_yml(cache, front=True))
    out = render_shoot(cfg, CREDS, {c.upstream: FAKE_TLS for c in cfg.caches},
                       RenderOptions(front_image=FRONT_IMAGE, vpa=True))
    check_golden(f"../{GOLDEN_FRONT.name}/shoot-objects.yaml", "---\n".join(o.text for o in out.objects))


def _stopping(options: RenderOptions) -> tuple[dict, list[dict]]:
    out = render_shoot(docs_config(), CREDS, {c.upstream: FAKE_TLS for c in docs_config().caches}, options)
    pod = next(iter(out.by_kind("StatefulSet")))["spec"]["template"]["spec"]
    return pod, pod["containers"]


def _flag(container: dict, name: str) -> float:
    return float(next(a.split("=", 1)[1] for a in container["args"] if a.startswith(f"--{name}=")))


def test_a_stopping_cache_pod_serves_until_it_has_left_the_service():
    """Both containers of a stopping Pod get the signal at once; what serves the cache's port keeps serving while
    the Pod leaves the Service's endpoints, distribution keeps serving the front until the front stops accepting,
    and the kubelet's grace covers the pause and distribution's drain."""
    pod, (registry,) = _stopping(RenderOptions())
    pause = int(registry["lifecycle"]["preStop"]["exec"]["command"][1])
    assert registry["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(pause)] and pause >= 5
    assert pod["terminationGracePeriodSeconds"] >= pause + 25  # distribution's draintimeout
    assert "draintimeout: 25s" in render_config_yml(docs_config().caches[0])

    pod, (registry, front) = _stopping(RenderOptions(front_image=FRONT_IMAGE))
    pause = int(registry["lifecycle"]["preStop"]["exec"]["command"][1])
    assert "lifecycle" not in front  # the front's own --shutdown-delay
    assert _flag(front, "shutdown-delay") >= 5 and pause > _flag(front, "shutdown-delay")
    assert pod["terminationGracePeriodSeconds"] >= max(pause + 25, _flag(front, "shutdown-delay") + _flag(front, "drain"))


def test_replicas_of_a_cache_reach_each_other_through_a_service_each():
    """High availability behind the front: a Service per replica selects that one Pod (the StatefulSet
    controller's pod-name label), and each front gets every replica's address by ordinal (--peers), so that the
    replica that owns a blob fetches it for both. No such Service without HA or without the front."""
    cfg = decode_and_default(config({"upstream": "a.io", "highAvailability": {"enabled": True}},
                                    {"upstream": "b.io"}), PC)
    tls = {c.upstream: FAKE_TLS for c in cfg.caches}
    out = render_shoot(cfg, {}, tls, RenderOptions(front_image=FRONT_IMAGE, owner="shoot--p--s"),
                       peers={"a.io": ["10.0.0.7", "fd00::8"]})
    replicas = [s for s in out.by_kind("Service") if "registry-cache.gardener.cloud/replica" in s["metadata"]["labels"]]
    assert [s["metadata"]["name"] for s in replicas] == ["registry-a-io-replica-0", "registry-a-io-replica-1"]
    for n, service in enumerate(replicas):
        assert service["spec"]["selector"] == {"app": "registry-a-io", "upstream-host": "a.io",
                                               "statefulset.kubernetes.io/pod-name": f"registry-a-io-{n}"}
        assert service["spec"]["ports"] == [{"name": "registry-cache", "port": 5000, "protocol": "TCP",
                                             "targetPort": "registry-cache"}]
        assert service["metadata"]["labels"]["registry-cache.gardener.cloud/owner"] == "shoot--p--s"
    sts = {s["metadata"]["name"]: s for s in out.by_kind("StatefulSet")}
    front = sts["registry-a-io"]["spec"]["template"]["spec"]["containers"][1]
    assert "--peers=10.0.0.7:5000,[fd00::8]:5000" in front["args"]
    assert not [a for a in sts["registry-b-io"]["spec"]["template"]["spec"]["containers"][1]["args"]
                if a.startswith("--peers")]
    assert not [s for s in render_shoot(cfg, {}, tls).by_kind("Service") if "replica" in s["metadata"]["name"]]
    long = "a" * 40 + ".example.com"
    long_cfg = decode_and_default(config({"upstream": long, "highAvailability": {"enabled": True}}), PC)
    names = [s["metadata"]["name"] for s in render_shoot(long_cfg, {}, {long: FAKE_TLS},
                                                         RenderOptions(front_image=FRONT_IMAGE)).by_kind("Service")]
    assert all(len(n) <= 63 for n in names) and len(set(names)) == 3, names


def test_the_front_serves_the_caches_port_and_distribution_only_loopback():
    cfg = docs_config()
    out = render_shoot(cfg, CREDS, {c.upstream: FAKE_TLS for c in cfg.caches}, RenderOptions(front_image=FRONT_IMAGE))
    sts = {s["metadata"]["name"]: s for s in out.by_kind("StatefulSet")}
    pod = sts["registry-docker-io"]["spec"]["template"]["spec"]
    registry, front = pod["containers"]
    assert (registry["name"], front["name"]) == ("registry-cache", "front")
    assert front["image"] == FRONT_IMAGE and registry["image"] == RenderOptions().image
    assert front["command"] == ["python", "-m", "extension.front"]
    assert front["args"] == ["--listen=:5000", "--backend=127.0.0.1:5002", "--spool-dir=/var/lib/registry",
                             "--shutdown-delay=5", "--drain=25", "--tls-cert=/etc/registry-cache-front/certs/tls.crt",
                             "--tls-key=/etc/registry-cache-front/certs/tls.key"]
    # the Service's target port (by name) is the front's; distribution keeps only its debug port
    assert front["ports"] == [{"name": "registry-cache", "containerPort": 5000, "protocol": "TCP"}]
    assert registry["ports"] == [{"name": "debug", "containerPort": 5001, "protocol": "TCP"}]
    service = next(s for s in out.by_kind("Service") if s["metadata"]["name"] == "registry-docker-io")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"registry-cache", "debug"}
    # distribution's probes, health and metrics are as without the front; the front has its own probes
    for probe in ("livenessProbe", "readinessProbe"):
        assert registry[probe]["httpGet"] == {"path": "/debug/health", "port": 5001, "scheme": "HTTP"}
        assert front[probe]["httpGet"] == {"path": "/healthz", "port": 5000, "scheme": "HTTPS"}
    assert pod["containers"][0]["securityContext"] == front["securityContext"]
    # the certificate goes to the front only; both mount the cache's volume (storage, spool)
    assert {m["name"]: m["mountPath"] for m in front["volumeMounts"]} == {
        "cache-volume": "/var/lib/registry", "certs-volume": "/etc/registry-cache-front/certs"}
    assert {m["name"]: m["mountPath"] for m in registry["volumeMounts"]} == {
        "cache-volume": "/var/lib/registry", "config-volume": "/etc/distribution"}
    config_yml = yaml.safe_load(render_config_yml(cfg.caches[0], front=True))
    assert config_yml["http"]["addr"] == "127.0.0.1:5002" and "tls" not in config_yml["http"]
    assert config_yml["http"]["debug"] == {"addr": ":5001", "prometheus": {"enabled": True, "path": "/metrics"}}
    secret = next(s for s in out.by_kind("Secret") if s["metadata"]["name"].startswith("registry-docker-io-config-"))
    assert base64.b64decode(secret["data"]["config.yml"]).decode() == render_config_yml(cfg.caches[0], front=True)
    # TLS off: the front serves plain HTTP, its probes too
    plain = decode_and_default(config({"upstream": "a.io", "http": {"tls": False}}), PC)
    pod = render_shoot(plain, options=RenderOptions(front_image=FRONT_IMAGE)).by_kind("StatefulSet")[0]
    front = pod["spec"]["template"]["spec"]["containers"][1]
    assert not [a for a in front["args"] if a.startswith("--tls")]
    assert front["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert [m["name"] for m in front["volumeMounts"]] == ["cache-volume"]


def test_without_a_front_image_the_pod_is_gardeners():
    cfg = docs_config()
    out = render_shoot(cfg, CREDS, {c.upstream: FAKE_TLS for c in cfg.caches})
    for sts in out.by_kind("StatefulSet"):
        assert [c["name"] for c in sts["spec"]["template"]["spec"]["containers"]] == ["registry-cache"]
    assert yaml.safe_load(render_config_yml(cfg.caches[0]))["http"]["addr"] == ":5000"


def test_config_yml_content():
    cfg, _ = rendered()
    by_upstream = {c.upstream: yaml.safe_load(render_config_yml(c)) for c in cfg.caches}
    docker = by_upstream["docker.io"]
    assert docker["proxy"] == {"remoteurl": "https://registry-1.docker.io", "ttl": "168h0m0s",
                               "exec": {"command": "/etc/distribution/credential-helper"}}
    assert docker["storage"]["delete"] == {"enabled": True} and "cache" not in docker["storage"]
    assert docker["storage"]["filesystem"] == {"rootdirectory": "/var/lib/registry"}
    assert docker["http"]["addr"] == ":5000" and docker["http"]["debug"]["addr"] == ":5001"
    assert docker["http"]["debug"]["prometheus"] == {"enabled": True, "path": "/metrics"}
    assert docker["http"]["tls"] == {"certificate": "/etc/distribution/certs/tls.crt",
                                     "key": "/etc/distribution/certs/tls.key"}
    assert docker["health"]["storagedriver"]["enabled"] is True
    assert by_upstream["quay.io"]["proxy"] == {"remoteurl": "https://quay.io", "ttl": "0s",
                                               "exec": {"command": "/etc/distribution/credential-helper"}}
    assert by_upstream["my-registry.io:5000"]["proxy"]["remoteurl"] == "http://my-registry.io:5000"


def test_tls_off_renders_no_tls():
    cfg = decode_and_default(config({"upstream": "a.io", "http": {"tls": False}}), PC)
    assert "tls" not in yaml.safe_load(render_config_yml(cfg.caches[0]))["http"]
    out = render_shoot(cfg)
    assert [o.kind for o in out.objects] == ["NetworkPolicy", "Secret", "StatefulSet", "Service"]
    svc = out.by_kind("Service")[0]
    assert svc["metadata"]["annotations"]["scheme"] == "http"
    sts = out.by_kind("StatefulSet")[0]
    assert [v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]] == ["config-volume"]
    assert render_hosts_toml("a.io", "https://a.io", "http://10.0.0.1:5000").count("ca =") == 0


def test_tls_on_requires_a_certificate():
    cfg = decode_and_default(config({"upstream": "a.io"}), PC)
    with pytest.raises(ValueError, match="no server certificate"):
        render_shoot(cfg)


def test_objects_shape():
    cfg, out = rendered()
    kinds = [o.kind for o in out.objects]
    assert kinds == ["NetworkPolicy"] + ["Secret", "Secret", "StatefulSet", "Service"] * 4
    sts = {s["metadata"]["name"]: s for s in out.by_kind("StatefulSet")}
    docker = sts["registry-docker-io"]
    pod = docker["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert docker["spec"]["replicas"] == 1
    assert docker["spec"]["selector"]["matchLabels"] == {"app": "registry-docker-io", "upstream-host": "docker.io"}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                            "runAsUser": 65532, "runAsGroup": 65532,
                                            "capabilities": {"drop": ["ALL"]}}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/debug/health", "port": 5001, "scheme": "HTTP"}
    assert container["resources"] == {"requests": {"cpu": "20m", "memory": "50Mi"}}
    vct = docker["spec"]["volumeClaimTemplates"][0]
    assert vct["metadata"]["name"] == "cache-volume"
    assert vct["spec"]["resources"]["requests"]["storage"] == "100Gi" and "storageClassName" not in vct["spec"]
    services = {s["metadata"]["name"]: s for s in out.by_kind("Service")}
    assert set(services) == {"registry-docker-io", "registry-ghcr-io", "registry-quay-io", "registry-static-name"}
    static = services["registry-static-name"]
    assert static["metadata"]["annotations"] == {"upstream": "my-registry.io:5000",
                                                 "remote-url": "http://my-registry.io:5000", "scheme": "https"}
    assert static["metadata"]["labels"]["upstream-host"] == "my-registry.io-5000"
    assert static["spec"]["selector"] == {"app": "registry-my-registry-io-5000", "upstream-host": "my-registry.io-5000"}
    assert [p["port"] for p in static["spec"]["ports"]] == [5000, 5001]
    secrets = out.by_kind("Secret")
    assert all(s["immutable"] is True for s in secrets)
    quay_config = next(s for s in secrets if s["metadata"]["name"].startswith("registry-quay-io-config-"))
    files = {key: base64.b64decode(value).decode() for key, value in quay_config["data"].items()}
    assert set(files) == {"config.yml", "credential-helper", "upstream-credentials"}
    assert quay_config["metadata"]["name"] == unique_name("registry-quay-io-config", files)
    volumes = {v["name"]: v["secret"] for v in sts["registry-quay-io"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config-volume"]["secretName"] == quay_config["metadata"]["name"]
    assert volumes["certs-volume"]["defaultMode"] == 0o640


def test_config_secret_name_changes_with_credentials():
    cfg = docs_config()
    quay = next(c for c in cfg.caches if c.upstream == "quay.io")
    a = render_shoot(cfg, {"quay.io": Credentials("u", "p1")}, {c.upstream: FAKE_TLS for c in cfg.caches})
    b = render_shoot(cfg, {"quay.io": Credentials("u", "p2")}, {c.upstream: FAKE_TLS for c in cfg.caches})
    names = lambda out: sorted(o.name for o in out.objects if o.name.startswith("registry-quay-io-config"))
    assert names(a) != names(b)
    assert quay.upstream == "quay.io"


def test_ha_proxy_storage_class_vpa():
    cfg = decode_and_default(config({"upstream": "a.io", "highAvailability": {"enabled": True},
                                     "proxy": {"httpProxy": "http://p:3128", "httpsProxy": "http://p:3129"},
                                     "volume": {"storageClassName": "premium", "size": "1.5Gi"}}), PC)
    out = render_shoot(cfg, tls={"a.io": FAKE_TLS}, options=RenderOptions(vpa=True, image="example.org/registry:3"))
    sts = out.by_kind("StatefulSet")[0]
    assert sts["metadata"]["labels"]["high-availability-config.resources.gardener.cloud/type"] == "server"
    assert sts["spec"]["replicas"] == 2
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "example.org/registry:3"
    assert container["env"] == [{"name": "HTTP_PROXY", "value": "http://p:3128"},
                                {"name": "HTTPS_PROXY", "value": "http://p:3129"}]
    vct = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert vct["storageClassName"] == "premium" and vct["resources"]["requests"]["storage"] == "1536Mi"
    pdb = out.by_kind("PodDisruptionBudget")[0]
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"]["matchLabels"]["app"] == "registry-a-io"
    vpa = out.by_kind("VerticalPodAutoscaler")[0]
    assert vpa["spec"]["targetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "registry-a-io"}


def test_hosts_toml():
    text = render_hosts_toml("docker.io", "https://registry-1.docker.io", "https://10.4.0.12:5000")
    assert tomllib.loads(text) == {"server": "https://registry-1.docker.io",
                                   "host": {"https://10.4.0.12:5000": {"capabilities": ["pull", "resolve"],
                                                                      "ca": ["/etc/containerd/certs.d/ca-bundle.pem"]}}}


def test_endpoint_brackets_ipv6():
    assert endpoint("https", "10.0.0.1") == "https://10.0.0.1:5000"
    assert endpoint("http", "fd00::1") == "http://[fd00::1]:5000"


def test_provider_status_wire_format():
    status = provider_status([("docker.io", "https://10.0.0.1:5000", "https://registry-1.docker.io")], "ca-bundle")
    assert status.to_wire() == {
        "apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryStatus",
        "caches": [{"upstream": "docker.io", "endpoint": "https://10.0.0.1:5000",
                    "remoteURL": "https://registry-1.docker.io"}],
        "caSecretName": "ca-bundle"}
    assert "caSecretName" not in provider_status([], None).to_wire()


def test_dial_timeout_in_hosts_toml():
    from extension.component.containerd import dial_timeout
    text = render_hosts_toml("docker.io", "https://registry-1.docker.io", "https://10.4.0.12:5000",
                             dial_timeout="200ms")
    assert tomllib.loads(text)["host"]["https://10.4.0.12:5000"]["dial_timeout"] == "200ms"
    assert "dial_timeout" not in render_hosts_toml("a.io", "https://a.io", "http://10.0.0.1:5000")
    assert dial_timeout("200ms") == "200ms" and dial_timeout("1.5s") == "1.5s"
    assert dial_timeout("0") is None and dial_timeout("0s") is None and dial_timeout("") is None
    for bad in ("200", "fast", "-1s", "1d"):
        with pytest.raises(ValueError):
            dial_timeout(bad)


def test_node_config_for_the_node_agent():
    from extension.component.containerd import containerd_registries, hosts_toml_for_entry
    from extension.component.objects import render_node_config
    status = provider_status([("docker.io", "https://10.0.0.1:5000", "https://registry-1.docker.io"),
                              ("my-registry.io:5000", "http://10.0.0.2:5000", "http://my-registry.io:5000")],
                             "ca-extension-registry-cache-bundle")
    entries = containerd_registries(status)
    assert entries[0] == {"upstream": "docker.io", "server": "https://registry-1.docker.io",
                          "hosts": [{"url": "https://10.0.0.1:5000", "capabilities": ["pull", "resolve"],
                                     "caCerts": ["/etc/containerd/certs.d/ca-bundle.pem"]}],
                          "readinessProbe": True}
    assert "caCerts" not in entries[1]["hosts"][0]  # no CA for a plain http endpoint
    cm = render_node_config(status, "PEM", RenderOptions(owner="shoot--dev--x")).obj
    assert cm["metadata"]["name"].startswith("registry-cache-node-config-")
    # the node agent's entries carry the dial timeout (Gardener's RegistryHost has no such field)
    assert yaml.safe_load(cm["data"]["registries.yaml"]) == {"registries": [
        {**e, "hosts": [{**e["hosts"][0], "dialTimeout": "100ms"}]} for e in entries]}
    cm = render_node_config(status, "PEM", RenderOptions(owner="shoot--dev--x", dial_timeout=None)).obj
    assert yaml.safe_load(cm["data"]["registries.yaml"]) == {"registries": entries}
    assert cm["data"]["ca-bundle.pem"] == "PEM"
    assert tomllib.loads(hosts_toml_for_entry(entries[1]))["host"] == {
        "http://10.0.0.2:5000": {"capabilities": ["pull", "resolve"]}}


def test_nodes_try_the_replicas_after_the_cache_and_before_the_upstream():
    """A replica on a node that stopped stays among the Service's endpoints until the node is marked unready: a
    connection the Service sends there times out (dial_timeout), and containerd tries the next host. The replicas'
    own Services come next, so that is the other replica, not the upstream. With node auth every cache host
    carries the key."""
    from extension.component.containerd import hosts_toml_for_entry
    from extension.component.objects import render_node_config
    from extension.component.registrycache import plan
    cfg = decode_and_default(config({"upstream": "a.io", "highAvailability": {"enabled": True}}), PC)
    planned = plan(cfg, {}, {"a.io": "https://10.0.0.1:5000"}, {"a.io": FAKE_TLS}, "PEM",
                   RenderOptions(front_image=FRONT_IMAGE), peers={"a.io": ["10.0.0.7", "10.0.0.8"]})
    [entry] = yaml.safe_load(planned.node_config.obj["data"]["registries.yaml"])["registries"]
    assert [h["url"] for h in entry["hosts"]] == ["https://10.0.0.1:5000", "https://10.0.0.7:5000",
                                                   "https://10.0.0.8:5000"]
    assert all(h["dialTimeout"] == "100ms" and h["caCerts"] for h in entry["hosts"])
    hosts = tomllib.loads(hosts_toml_for_entry(entry))
    assert hosts["server"] == "https://a.io" and list(hosts["host"]) == [h["url"] for h in entry["hosts"]]
    cm = render_node_config(planned.status, "PEM", node_auth=["a.io"], replicas={"a.io": ["https://10.0.0.7:5000"]})
    [entry] = yaml.safe_load(cm.obj["data"]["registries.yaml"])["registries"]
    assert len(entry["hosts"]) == 2 and all(h["nodeAuth"] for h in entry["hosts"])


def test_node_auth_config_secret_and_node_config():
    from extension.component import nodeauth
    from extension.component.objects import render_node_config
    node = nodeauth.generate()
    assert nodeauth.valid(node) and node.htpasswd.startswith("registry-cache-node:$2b$04$")
    assert not nodeauth.valid(nodeauth.NodeCredentials(node.username, "other", node.htpasswd))
    assert node.password not in repr(node)
    cfg = decode_and_default(config({"upstream": "docker.io", "http": {"tls": False}}), PC)
    objects = render_shoot(cfg, node_auth={"docker.io": node}).objects
    secret = next(o.obj for o in objects if o.kind == "Secret" and "-config-" in o.name)
    assert base64.b64decode(secret["data"]["htpasswd"]).decode() == node.htpasswd
    conf = yaml.safe_load(base64.b64decode(secret["data"]["config.yml"]))
    assert conf["auth"] == {"htpasswd": {"realm": "registry-cache", "path": "/etc/distribution/htpasswd"}}
    plain = next(o.obj for o in render_shoot(cfg).objects if o.kind == "Secret" and "-config-" in o.name)
    assert "htpasswd" not in plain["data"] and "auth" not in yaml.safe_load(base64.b64decode(plain["data"]["config.yml"]))
    status = provider_status([("docker.io", "https://10.0.0.1:5000", "https://registry-1.docker.io")], "ca")
    cm = render_node_config(status, "PEM", RenderOptions(owner="o"), node_auth=["docker.io"]).obj
    entries = yaml.safe_load(cm["data"]["registries.yaml"])["registries"]
    assert entries[0]["hosts"][0]["nodeAuth"] == "registry-docker-io" and node.password not in str(cm)
    shared = nodeauth.shoot_secret("kube-system", {"registry-docker-io": node.authorization})
    assert shared["metadata"]["name"] == "registry-cache-node-auth" and "registry-cache.gardener.cloud/owner" \
        not in shared["metadata"]["labels"]


def test_what_was_delivered_is_read_back_for_the_update_rules():
    from api.validation import validate_registry_config_update
    from extension.component import certs
    from extension.component.registrycache import delivered_config

    from .helpers import strs
    ca = certs.generate_ca()

    before = decode_and_default(config({"upstream": "a.io", "volume": {"size": "20Gi", "storageClassName": "std"}},
                                       {"upstream": "b.io", "garbageCollection": {"ttl": "0s"}, "http": {"tls": False}}),
                                PC)
    rendered = render_shoot(before, {}, {"a.io": certs.generate_server_cert(ca, "x", ["x"], [])}, RenderOptions())
    statefulsets = {o["metadata"]["name"]: o for o in rendered.by_kind("StatefulSet")}
    secrets = {o["metadata"]["name"]: o for o in rendered.by_kind("Secret")}
    after = decode_and_default(config({"upstream": "a.io", "volume": {"size": "20Gi", "storageClassName": "std"}},
                                      {"upstream": "b.io", "garbageCollection": {"ttl": "1h"}},
                                      {"upstream": "c.io"}), PC)
    delivered = delivered_config(after, statefulsets, secrets)
    assert [c.upstream for c in delivered.caches] == ["a.io", "b.io"]
    assert strs(validate_registry_config_update(delivered, after, PC)) == [
        f'{PC}.caches[1].garbageCollection.ttl: Invalid value: "1h0m0s": garbage collection cannot be enabled '
        '(ttl > 0) once it is disabled (ttl = 0)']
    assert validate_registry_config_update(delivered, before, PC) == []


def test_vpa_and_priority_as_gardener_v024():
    """VPA ``updateMode: InPlaceOrRecreate`` with a 20Mi memory floor, requests only, other containers off;
    the cache Pods run with ``priorityClassName: system-cluster-critical``."""
    cfg = decode_and_default(config({"upstream": "a.io"}), PC)
    out = render_shoot(cfg, tls={"a.io": FAKE_TLS}, options=RenderOptions(vpa=True))
    [vpa] = out.by_kind("VerticalPodAutoscaler")
    assert vpa["spec"]["updatePolicy"] == {"updateMode": "InPlaceOrRecreate"}
    assert vpa["spec"]["resourcePolicy"]["containerPolicies"] == [
        {"containerName": "registry-cache", "controlledValues": "RequestsOnly", "minAllowed": {"memory": "20Mi"}},
        {"containerName": "*", "mode": "Off"}]
    [sts] = out.by_kind("StatefulSet")
    assert sts["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
    assert render_shoot(cfg, tls={"a.io": FAKE_TLS}).by_kind("VerticalPodAutoscaler") == []


def test_vpa_only_when_the_shoot_wants_it():
    from api.shoot import purpose, wants_vpa
    shoot = {"spec": {"kubernetes": {"verticalPodAutoscaler": {"enabled": True}}}}
    assert wants_vpa(shoot) and not wants_vpa({"spec": {"kubernetes": {"verticalPodAutoscaler": {}}}})
    assert not wants_vpa({"spec": {}}) and not wants_vpa({"spec": {"kubernetes": {"verticalPodAutoscaler": None}}})
    assert purpose({"spec": {}}) == "evaluation" and purpose({"spec": {"purpose": "testing"}}) == "testing"


def test_ipv6_cluster_ips_in_brackets_everywhere():
    """An IPv6 cluster IP: ``[addr]:5000`` in the status and hosts.toml (Go's net.JoinHostPort), the address
    itself in the server certificate."""
    from extension.component.registrycache import cert_requests, plan
    cfg = decode_and_default(config({"upstream": "ghcr.io"}, {"upstream": "quay.io", "http": {"tls": False}}), PC)
    endpoints = {"ghcr.io": endpoint("https", "fd00:10:96::1a"), "quay.io": endpoint("http", "fd00:10:96::1b")}
    assert endpoints == {"ghcr.io": "https://[fd00:10:96::1a]:5000", "quay.io": "http://[fd00:10:96::1b]:5000"}
    [request] = cert_requests(cfg, "kube-system", {"ghcr.io": ["fd00:10:96::1a"]})
    assert request.ip_addresses == ["fd00:10:96::1a"]
    planned = plan(cfg, {}, endpoints, {"ghcr.io": FAKE_TLS}, "PEM", RenderOptions())
    assert [c.endpoint for c in planned.status.caches] == ["https://[fd00:10:96::1a]:5000",
                                                           "http://[fd00:10:96::1b]:5000"]
    hosts = hosts_toml_for_status(planned.status)
    assert list(tomllib.loads(hosts["ghcr.io"])["host"]) == ["https://[fd00:10:96::1a]:5000"]


def _config_volume(sts: dict) -> dict:
    return next(v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "config-volume")["secret"]


@pytest.mark.parametrize("node_auth", [False, True], ids=["open", "node-auth"])
@pytest.mark.parametrize("with_credentials", [False, True], ids=["public", "private"])
def test_every_cache_gets_the_credential_helper(node_auth, with_credentials):
    """distribution asks its upstream at start (and exits while it cannot be reached) unless proxy.exec names a
    credential helper: every cache gets one, in its config Secret, mounted executable next to config.yml, with
    the upstream's credentials (if any) in a file beside it; config.yml holds none."""
    from extension.component import nodeauth
    upstream = "quay.io" if with_credentials else "docker.io"
    cfg = decode_and_default(config({"upstream": upstream, **({"secretReferenceName": "creds"}
                                                                if with_credentials else {})}), PC)
    creds = {upstream: Credentials("robot", 'p"w\n')} if with_credentials else {}
    objects = render_shoot(cfg, creds, tls={upstream: FAKE_TLS},
                           node_auth={upstream: nodeauth.generate()} if node_auth else None).objects
    secret = next(o.obj for o in objects if o.kind == "Secret" and "-config-" in o.name)
    conf = yaml.safe_load(base64.b64decode(secret["data"]["config.yml"]))
    assert conf["proxy"]["exec"] == {"command": "/etc/distribution/credential-helper"}
    assert "username" not in conf["proxy"] and "password" not in conf["proxy"]
    assert base64.b64decode(secret["data"]["credential-helper"]).decode() == render_credential_helper()
    if with_credentials:
        assert json.loads(base64.b64decode(secret["data"]["upstream-credentials"])) == \
            {"Username": "robot", "Secret": 'p"w\n'}
    else:
        assert "upstream-credentials" not in secret["data"]
    volume = _config_volume(next(o.obj for o in objects if o.kind == "StatefulSet"))
    assert volume["secretName"] == secret["metadata"]["name"]
    # every key of the Secret (items select), the helper executable for the group fsGroup gives the cache, the
    # upstream's credentials readable by that group only (not by every user of the container)
    modes = {"credential-helper": 0o755, "upstream-credentials": 0o440}
    assert volume["items"] == [{"key": k, "path": k, **({"mode": modes[k]} if k in modes else {})}
                               for k in sorted(secret["data"])]
    assert ("htpasswd" in secret["data"]) is node_auth


@pytest.mark.parametrize("password", ["pw", 'with "quotes", \\ and a\nnewline', "ünïcödé", " spaces "])
def test_the_credential_helper_answers_with_the_credentials_beside_it(tmp_path, password):
    """With the rendered credentials file beside it the helper answers with exactly those (also under busybox's
    sh, the local cluster's image); a file it cannot read makes it fail (distribution logs that)."""
    import shutil
    import subprocess
    files = config_files(decode_and_default(config({"upstream": "quay.io", "secretReferenceName": "c"}), PC)
                         .caches[0], Credentials("robot", password))
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    helper = tmp_path / "credential-helper"
    helper.chmod(0o755)
    shells = [[str(helper)]] + ([[shutil.which("busybox"), "sh", str(helper)]] if shutil.which("busybox") else [])
    for argv in shells:
        done = subprocess.run([*argv, "get"], input="quay.io", capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"Username": "robot", "Secret": password}
    (tmp_path / "upstream-credentials").write_text("")  # there, but empty: not "no credentials"
    done = subprocess.run([str(helper), "get"], input="quay.io", capture_output=True, text=True, timeout=10)
    assert done.returncode == 1 and "cannot read" in done.stderr


@pytest.mark.parametrize("server", ["registry-1.docker.io", "10.244.0.2", "[fd00::1]:5000", "", 'x"}, "Secret": "y'])
def test_the_credential_helper_answers_get_with_empty_credentials(tmp_path, server):
    """The docker-credential-helpers protocol as distribution's proxy.exec speaks it: ``<helper> get``, the server
    on stdin (no newline), JSON on stdout. The server is echoed only when it looks like a host."""
    import json
    import shutil
    import subprocess
    helper = tmp_path / "credential-helper"
    helper.write_text(render_credential_helper())
    helper.chmod(0o755)
    shells = [[str(helper)]] + ([[shutil.which("busybox"), "sh", str(helper)]] if shutil.which("busybox") else [])
    for argv in shells:
        done = subprocess.run([*argv, "get"], input=server, capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer == {"ServerURL": server if '"' not in server else "", "Username": "", "Secret": ""}
        refused = subprocess.run([*argv, "store"], input="{}", capture_output=True, text=True, timeout=10)
        assert refused.returncode == 1 and "only 'get'" in refused.stderr
