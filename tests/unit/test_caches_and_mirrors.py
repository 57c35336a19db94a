"""Where issue 13's additions (dial_timeout, node-only caches, upstream credential checks) meet issue 12's
registry-mirror extension: each is the caches' alone. A mirror's hosts get neither ``dial_timeout`` nor an Authorization
header (docs/operations/beyond-gardener.md, "Failover in under a second": a mirror is a registry meant to answer), the
registry-mirror Extension gets no credential conditions and is never checked, and the reconciler's 409 retry of its
finalizer patch holds for both types."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import yaml

from api.mirror_validation import decode_and_default_mirror
from api.secrets import Credentials
from extension.cli.main import main
from extension.component.objects import RenderOptions, provider_status, render_mirror_node_config, render_node_config
from extension.constants import DEFAULT_DIAL_TIMEOUT, MIRROR_FINALIZER, NODE_CONFIG_LABEL
from extension.controller.actuator import Outcome
from extension.controller.reconciler import Controller, Op
from extension.controller.upstreams import UpstreamChecks
from extension.nodeagent.agent import NodeAgent
from extension.nodeagent.plan import desired_state
from extension.runtime.kube import ApiError
from extension.upstreamcheck import VALID, CheckResult, Target

from .helpers import PC
from .test_mirror import CA, DOCS, _secret_manifest, _write, mirror_shoot

HEADER = "Basic bm9kZTpzZWNyZXQ="


def _published() -> list[dict[str, Any]]:
    """The two ConfigMaps the controller publishes for one shoot with caches (node auth on) and mirrors."""
    status = provider_status([("ghcr.io", "https://10.4.0.9:5000", "https://ghcr.io")], "ca-bundle")
    options = RenderOptions(owner="shoot--dev--a", dial_timeout=DEFAULT_DIAL_TIMEOUT, node_auth=True)
    caches = render_node_config(status, CA.cert_pem, options, node_auth={"ghcr.io"}).obj
    mirrors = render_mirror_node_config(decode_and_default_mirror(DOCS, PC),
                                        {("quay.io", "https://private-mirror.internal"): CA.cert_pem.encode()},
                                        options).obj
    for i, cm in enumerate((caches, mirrors)):
        cm["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:0{i}Z"
    return [caches, mirrors]


def _hosts(cm: dict[str, Any]) -> list[dict[str, Any]]:
    return [h for e in yaml.safe_load(cm["data"]["registries.yaml"])["registries"] for h in e["hosts"]]


def test_only_the_cache_hosts_carry_dial_timeout_and_node_auth():
    caches, mirrors = _published()
    assert caches["metadata"]["labels"][NODE_CONFIG_LABEL] == "true" == mirrors["metadata"]["labels"][NODE_CONFIG_LABEL]
    [cache_host] = _hosts(caches)
    assert cache_host["dialTimeout"] == "100ms" and cache_host["nodeAuth"] == "registry-ghcr-io"
    assert len(_hosts(mirrors)) == 3
    for host in _hosts(mirrors):  # the controller's dial_timeout and node auth are on: still none
        assert "dialTimeout" not in host and "nodeAuth" not in host, host


def test_the_node_agent_writes_the_cache_with_both_and_the_mirrors_with_neither(tmp_path: Path):
    configmaps = _published()
    desired = desired_state(configmaps, node_auth={"registry-ghcr-io": HEADER})
    assert desired.node_auth_wanted == {"registry-ghcr-io"} and desired.private == {"ghcr.io"}
    assert sorted(desired.hosts_toml) == ["docker.io", "ghcr.io", "quay.io", "registry.k8s.io"]
    cache = tomllib.loads(desired.hosts_toml["ghcr.io"])["host"]["https://10.4.0.9:5000"]
    assert cache["dial_timeout"] == "100ms" and cache["header"] == {"Authorization": HEADER}
    for upstream in ("docker.io", "quay.io", "registry.k8s.io"):
        text = desired.hosts_toml[upstream]
        assert "dial_timeout" not in text and "header" not in text and HEADER not in text, text
    assert "private-mirror.internal-ca-bundle.pem" in desired.hosts_toml["quay.io"]

    root = tmp_path / "certs.d"
    agent = NodeAgent(lambda: configmaps, root, prober=lambda url, ca: True,
                      read_node_auth=lambda: {"registry-ghcr-io": HEADER})
    result = agent.sync()
    assert result.ok, result
    assert (root / "ghcr.io" / "hosts.toml").stat().st_mode & 0o777 == 0o600  # the credentials: root only
    for upstream in ("docker.io", "quay.io", "registry.k8s.io"):
        assert (root / upstream / "hosts.toml").stat().st_mode & 0o777 == 0o644
    assert (root / "quay.io" / "private-mirror.internal-ca-bundle.pem").read_text() == CA.cert_pem

    # the node-auth Secret not there (yet): the cache's hosts.toml waits, the mirrors are not held up
    fresh = tmp_path / "fresh"
    result = NodeAgent(lambda: configmaps, fresh, prober=lambda url, ca: True).sync()
    assert result.ok
    assert not (fresh / "ghcr.io" / "hosts.toml").exists()
    assert all((fresh / u / "hosts.toml").is_file() for u in ("docker.io", "quay.io", "registry.k8s.io"))


def test_render_writes_dial_timeout_for_the_caches_only(tmp_path: Path, capsys):
    cache = {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig",
             "caches": [{"upstream": "ghcr.io"}]}
    shoot = _write(tmp_path, "shoot.yaml", [mirror_shoot(cache=cache), _secret_manifest()])
    for flags, wanted in (([], "100ms"), (["--dial-timeout", "250ms"], "250ms"), (["--dial-timeout", "0"], None)):
        out = tmp_path / "out"
        assert main(["render", shoot, "-o", str(out), "--endpoint", "ghcr.io=https://10.4.0.9:5000", *flags]) == 0
        nodes = out / "nodes"
        assert tomllib.loads((nodes / "ghcr.io" / "hosts.toml").read_text())["host"][
            "https://10.4.0.9:5000"].get("dial_timeout") == wanted
        for upstream in ("docker.io", "quay.io", "registry.k8s.io"):
            assert "dial_timeout" not in (nodes / upstream / "hosts.toml").read_text()
    capsys.readouterr()


# --- the reconciler ------------------------------------------------------------------------------------------

class FakeSeed:
    """Extensions in memory; ``conflicts``: how many finalizer/annotation patches answer 409 first (the bridge's
    annotation came in between)."""

    def __init__(self, *extensions: dict[str, Any], conflicts: int = 0):
        self.objects = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in extensions}
        self.conflicts = conflicts
        self.status_patches: list[tuple[str, dict[str, Any]]] = []
        self._version = 10

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        assert kind == "Extension"
        obj = self.objects.get((namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def patch(self, kind: str, name: str, patch: dict[str, Any], namespace: str | None = None,
              subresource: str | None = None) -> dict[str, Any]:
        obj = self.objects[(namespace or "", name)]
        meta = patch.get("metadata") or {}
        if subresource is None and self.conflicts:
            self.conflicts -= 1
            self._bump(obj)  # somebody else wrote it meanwhile
            raise ApiError("PATCH", f"/extensions/{name}", 409, {"reason": "Conflict", "message": "modified"})
        if subresource is None and meta.get("resourceVersion") not in (None, obj["metadata"]["resourceVersion"]):
            raise ApiError("PATCH", f"/extensions/{name}", 409, {"reason": "Conflict", "message": "stale"})
        if "finalizers" in meta:
            obj["metadata"]["finalizers"] = meta["finalizers"]
        if "annotations" in meta:
            annotations = obj["metadata"].setdefault("annotations", {})
            for key, value in meta["annotations"].items():
                annotations.pop(key, None) if value is None else annotations.__setitem__(key, value)
        if "status" in patch:
            self.status_patches.append((name, copy.deepcopy(patch["status"])))
            obj.setdefault("status", {}).update(patch["status"])
        self._bump(obj)
        return copy.deepcopy(obj)

    def _bump(self, obj: dict[str, Any]) -> None:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)


def _ext(extension_type: str, ns: str = "shoot--dev--a") -> dict[str, Any]:
    """An Extension in place (reconciled before), annotated ``reconcile`` as gardenlet (or the bridge) does."""
    status = {"observedGeneration": 1, "lastOperation": {"type": "Reconcile", "state": "Succeeded"}}
    return {"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
            "metadata": {"name": extension_type, "namespace": ns, "uid": f"uid-{extension_type}", "generation": 1,
                         "resourceVersion": "1", "annotations": {"gardener.cloud/operation": "reconcile"}},
            "spec": {"type": extension_type}, "status": status}


class FakeCaches:
    extension_type = "registry-cache"
    what = "registry caches"

    def __init__(self, upstreams: UpstreamChecks):
        self.upstreams = upstreams
        self.learnt: list[str] = []

    def reconcile(self, ext: dict[str, Any]) -> Outcome:
        assert ext["spec"]["type"] == "registry-cache"
        self.upstreams.set_targets(ext["metadata"]["namespace"], [
            Target("quay.io", "https://quay.io", Credentials("robot", "pw"))])
        return Outcome({"caches": []}, "The registry caches are delivered")

    restore = reconcile

    def learn_upstreams(self, ext: dict[str, Any]) -> None:
        self.learnt.append(ext["spec"]["type"])

    def delete(self, ext: dict[str, Any]) -> None:
        pass

    def migrate(self, ext: dict[str, Any]) -> None:
        pass


class FakeMirrors:
    extension_type = "registry-mirror"
    what = "registry mirrors"

    def __init__(self):
        self.reconciled = 0

    def reconcile(self, ext: dict[str, Any]) -> Outcome:
        assert ext["spec"]["type"] == "registry-mirror"
        self.reconciled += 1
        return Outcome(None, "The registry mirrors are configured for the nodes (docker.io)")

    restore = reconcile

    def delete(self, ext: dict[str, Any]) -> None:
        pass

    def migrate(self, ext: dict[str, Any]) -> None:
        pass


def _controller(seed: FakeSeed) -> tuple[Controller, FakeCaches, FakeMirrors, list[list[Target]]]:
    checked: list[list[Target]] = []

    def checker(targets, timeout, deadline):
        checked.append(list(targets))
        return [CheckResult(t.upstream, VALID, 200, f"GET /v2/ with the token at {t.upstream}: 200") for t in targets]

    upstreams = UpstreamChecks(checker=checker)
    caches, mirrors = FakeCaches(upstreams), FakeMirrors()
    controller = Controller(seed, caches, mirror=mirrors, upstreams=upstreams)  # type: ignore[arg-type]
    return controller, caches, mirrors, checked


def test_the_mirror_extension_gets_its_status_and_no_credential_conditions():
    cache, mirror = _ext("registry-cache"), _ext("registry-mirror")
    seed = FakeSeed(cache, mirror)
    controller, caches, mirrors, checked = _controller(seed)

    assert controller.handle(seed.get("Extension", "registry-cache", "shoot--dev--a")) == Op.RECONCILE
    assert [[t.upstream for t in ts] for ts in checked] == [["quay.io"]]
    conditions = seed.objects[("shoot--dev--a", "registry-cache")]["status"]["conditions"]
    assert [(c["type"], c["status"]) for c in conditions] == [("UpstreamCredentialsValid-quay.io", "True")]

    # the mirror's Extension, in the same namespace whose caches' upstreams are known: no check, no conditions
    assert controller.handle(seed.get("Extension", "registry-mirror", "shoot--dev--a")) == Op.RECONCILE
    assert mirrors.reconciled == 1 and len(checked) == 1
    written = seed.objects[("shoot--dev--a", "registry-mirror")]
    assert written["metadata"]["finalizers"] == [MIRROR_FINALIZER]
    assert written["status"]["lastOperation"]["state"] == "Succeeded"
    assert written["status"]["lastOperation"]["description"].startswith("The registry mirrors are configured")
    assert "conditions" not in written["status"] and "providerStatus" not in written["status"]

    # the periodic check of the namespace (both Extensions live there) writes only the cache's Extension
    seed.objects[("shoot--dev--a", "registry-cache")]["status"]["conditions"] = []
    assert controller.check_upstreams("shoot--dev--a") is True
    assert {name for name, _ in seed.status_patches if "conditions" in _} == {"registry-cache"}
    assert "conditions" not in seed.objects[("shoot--dev--a", "registry-mirror")]["status"]

    # a mirror's later event with nothing to do never asks the cache actuator what to check
    mirror_now = seed.get("Extension", "registry-mirror", "shoot--dev--a")
    mirror_now["metadata"]["resourceVersion"] = "999"  # not an echo of our own write
    controller.upstreams.forget("shoot--dev--a")  # type: ignore[union-attr]  (as after a restart)
    assert controller.handle(mirror_now) is None
    assert caches.learnt == []
    cache_now = seed.get("Extension", "registry-cache", "shoot--dev--a")
    cache_now["metadata"]["resourceVersion"] = "1000"
    assert controller.handle(cache_now) is None
    assert caches.learnt == ["registry-cache"]


def test_a_409_on_the_finalizer_patch_is_read_again_for_either_type():
    for extension_type, finalizer in (("registry-mirror", MIRROR_FINALIZER),
                                      ("registry-cache", "extensions.gardener.cloud/registry-cache")):
        seed = FakeSeed(_ext(extension_type), conflicts=1)
        controller, _, _, _ = _controller(seed)
        assert controller.handle(seed.get("Extension", extension_type, "shoot--dev--a")) == Op.RECONCILE
        written = seed.objects[("shoot--dev--a", extension_type)]
        assert written["metadata"]["finalizers"] == [finalizer]
        assert "gardener.cloud/operation" not in written["metadata"]["annotations"]
        assert written["status"]["lastOperation"]["state"] == "Succeeded", written["status"]

