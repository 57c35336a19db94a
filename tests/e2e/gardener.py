"""Gardener's extension delivering a Shoot's caches onto a test cluster: for the switch scenario
(scenarios.test_switch_from_gardeners_extension_and_back_keeps_every_blob).

What Gardener's extension (gardener-extension-registry-cache, the version hack/go/render/go.mod requires) delivers
comes from its own code: the rendering harness ``hack/go/render`` (built by ``hack/parity.sh render``, cached) runs
its actuator into a fake client and answers with the objects of its ManagedResources. Those are put into the cluster
as gardener-resource-manager puts them: created when missing, else merged onto what is there as its
``pkg/resourcemanager/controller/managedresource/merger.go`` merges (the labels and annotations that are there kept,
the StatefulSet's ``volumeClaimTemplates`` and a Service's cluster IP kept from the live object) and written with an
update. The one change to Gardener's objects: the cache image is the cluster's (no registry beyond the machine).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "resources.gardener.cloud/origin"
REFERENCE_PREFIX = "reference.resources.gardener.cloud/"
# kubectl's names of the kinds Gardener's ManagedResources hold for the shoot
RESOURCES = {"Secret": "secret", "Service": "service", "StatefulSet": "statefulset.apps",
             "NetworkPolicy": "networkpolicy.networking.k8s.io", "PodDisruptionBudget": "poddisruptionbudget.policy"}


def render_binary() -> str:
    """The harness, built on first use (Go and the module proxy); skips where there is no Go toolchain."""
    if shutil.which("go") is None and not Path("/usr/local/go/bin/go").is_file():
        pytest.skip("no Go toolchain: Gardener's rendering harness (hack/parity.sh render) is built with Go")
    env = dict(os.environ)
    if shutil.which("go") is None:
        env["PATH"] = "/usr/local/go/bin:" + env.get("PATH", "")
    done = subprocess.run(["bash", str(REPO / "hack" / "parity.sh"), "render"], cwd=REPO, capture_output=True,
                          text=True, timeout=3600, env=env)
    if done.returncode != 0:
        pytest.fail(f"hack/parity.sh render failed ({done.returncode}):\n{done.stderr[-3000:]}", pytrace=False)
    return done.stdout.strip().splitlines()[-1]


def render(binary: str, namespace: str, shoot: dict[str, Any], cluster_ips: dict[str, str]) -> dict[str, Any]:
    """What Gardener's actuator delivers for ``shoot`` in the seed namespace ``namespace``."""
    request = {"namespace": namespace, "shoot": shoot, "secrets": [], "clusterIPs": cluster_ips,
               "osc": {"criConfig": {"name": "containerd"}, "files": []}}
    done = subprocess.run([binary], input=json.dumps(request) + "\n", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"gardener-render exited {done.returncode}: {done.stderr[-2000:]}"
    answer = json.loads(done.stdout.splitlines()[0])
    assert not answer.get("error") and not answer.get("fatal"), answer
    return answer


def shoot_objects(answer: dict[str, Any], image: str) -> list[dict[str, Any]]:
    """The objects of Gardener's ManagedResources for the shoot, the cache containers' image the cluster's."""
    objects = []
    for obj in answer["shoot"]:
        obj = copy.deepcopy(obj)
        obj.pop("status", None)
        if obj["kind"] == "StatefulSet":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                container["image"] = image
        objects.append(obj)
    return objects


def merged(desired: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    """``desired`` merged onto ``live`` as gardener-resource-manager's merger does it (the parts that matter
    here): live metadata, labels and annotations kept and the desired ones put over them (reference annotations
    dropped), the origin annotation, the live status; a StatefulSet keeps its volume claim templates (immutable)
    and, without desired replicas, its replicas; a Service its cluster IPs."""
    out = copy.deepcopy(desired)
    meta = copy.deepcopy(live["metadata"])
    meta.pop("managedFields", None)
    meta["labels"] = {**(meta.get("labels") or {}), **(desired["metadata"].get("labels") or {})}
    meta["annotations"] = {**{k: v for k, v in (meta.get("annotations") or {}).items()
                              if not k.startswith(REFERENCE_PREFIX)},
                           **(desired["metadata"].get("annotations") or {}), ORIGIN: "registry-cache"}
    out["metadata"] = meta
    if live.get("status"):
        out["status"] = live["status"]
    if desired["kind"] == "StatefulSet":
        out["spec"]["volumeClaimTemplates"] = live["spec"].get("volumeClaimTemplates")
        if out["spec"].get("replicas") is None:
            out["spec"]["replicas"] = live["spec"].get("replicas")
    if desired["kind"] == "Service":
        for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
            if key in live["spec"]:
                out["spec"][key] = live["spec"][key]
    return out


def deliver(c: Any, objects: list[dict[str, Any]]) -> None:
    """Put ``objects`` into the cluster ``c`` (a scenarios.E2ECluster) as gardener-resource-manager does."""
    for obj in objects:
        resource = RESOURCES[obj["kind"]]
        live = c.get(resource, obj["metadata"]["name"], obj["metadata"].get("namespace"))
        if live is None:
            obj = copy.deepcopy(obj)
            obj["metadata"].setdefault("annotations", {})[ORIGIN] = "registry-cache"
            c.kubectl("create", "-f", "-", input=json.dumps(obj))
        else:
            c.kubectl("replace", "-f", "-", input=json.dumps(merged(obj, live)))


def fetch_through(c: Any, endpoint: str, repository: str, digest: str, blobs: frozenset[str],
                  namespace: str, image: str) -> str:
    """A Pod (busybox wget in ``image``) that GETs the manifest ``digest`` and each blob of ``repository`` through
    the cache at ``endpoint`` (http), as a node's pull would; what it said."""
    import uuid

    from .scenarios import wait_for

    accept = ",".join(["application/vnd.oci.image.manifest.v1+json",
                       "application/vnd.docker.distribution.manifest.v2+json",
                       "application/vnd.oci.image.index.v1+json",
                       "application/vnd.docker.distribution.manifest.list.v2+json"])
    script = f"set -e; wget -q -O /dev/null --header 'Accept: {accept}' {endpoint}/v2/{repository}/manifests/{digest}"
    for blob in sorted(blobs):
        script += f"; wget -q -O /dev/null {endpoint}/v2/{repository}/blobs/{blob}"
    script += "; echo fetched"
    pod = f"fetch-{uuid.uuid4().hex[:6]}"
    c.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": namespace},
             "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
                 "name": "fetch", "image": image, "command": ["/bin/busybox", "sh", "-c", script]}]}})
    wait_for(f"Pod {pod} to end", lambda: ((c.get("pod", pod, namespace) or {}).get("status") or {}).get("phase")
             in ("Succeeded", "Failed"), timeout=180)
    said = c.kubectl("logs", "-n", namespace, pod, check=False).stdout + c.kubectl(
        "get", "pod", pod, "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
    c.delete("pod", pod, namespace, wait=False)
    return said
