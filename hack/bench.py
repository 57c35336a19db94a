#!/usr/bin/env python3
"""Benchmark: API calls and time per reconcile on a real local control plane, rendering throughput, memory.

    python hack/bench.py [--extensions 20] [--caches 4]

Prints its figures; asserts nothing. The controller runs in this process (no kopf), so every request it
makes is counted by the Kube client, per verb.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.field import Path as FieldPath
from api.secrets import Credentials
from api.validation import decode_and_default
from extension.component.certs import KeyPair
from extension.component.objects import RenderOptions, render_shoot
from extension.controller.actuator import Actuator
from extension.controller.reconciler import Controller
from extension.kube import Kube
from extension.local.controlplane import LocalControlPlane, apply_manifests, load_manifests, wait_for_crds_established

REPO = Path(__file__).resolve().parent.parent


def provider_config(i: int, caches: int) -> dict:
    items = [{"upstream": f"r{c}.bench{i}.example"} for c in range(caches)]
    items[0]["secretReferenceName"] = "creds"
    return {"apiVersion": "registry.extensions.gardener.cloud/v1alpha3", "kind": "RegistryConfig", "caches": items}


def bench_render(caches: int, rounds: int = 200) -> float:
    cfg = decode_and_default(provider_config(0, caches), FieldPath("spec"))
    tls = {c.upstream: KeyPair("cert", "key") for c in cfg.caches}
    creds = {cfg.caches[0].upstream: Credentials("user", "password")}
    start = time.perf_counter()
    for _ in range(rounds):
        render_shoot(cfg, creds, tls)
    return (time.perf_counter() - start) / rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extensions", type=int, default=20)
    parser.add_argument("--caches", type=int, default=4)
    args = parser.parse_args()

    per_render = bench_render(args.caches)
    print(f"render_shoot, {args.caches} caches (pure): {per_render * 1000:.2f} ms")

    with LocalControlPlane() as cp:
        api = cp.api_client()
        crds = REPO / "manifests" / "crds"
        apply_manifests(api, [crds])
        wait_for_crds_established(api, [o["metadata"]["name"] for o in load_manifests([crds])], timeout=60)
        setup = Kube(api, field_manager="bench-setup")
        seed = Kube(cp.api_client(), field_manager="registry-cache")
        controller = Controller(seed, Actuator(seed, lambda ns: seed, RenderOptions(image="registry:3")))
        names = []
        for i in range(args.extensions):
            ns = f"shoot--bench--s{i}"
            setup.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            setup.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ref-creds-v1", "namespace": ns},
                         "data": {"username": "dXNlcg==", "password": "cGFzcw=="}})
            setup.apply({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Cluster",
                         "metadata": {"name": ns},
                         "spec": {"seed": {}, "cloudProfile": {}, "shoot": {"metadata": {"name": f"s{i}"}, "spec": {
                             "resources": [{"name": "creds", "resourceRef": {"apiVersion": "v1", "kind": "Secret",
                                                                             "name": "creds-v1"}}]}}}})
            setup.create({"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": "Extension",
                          "metadata": {"name": "registry-cache", "namespace": ns},
                          "spec": {"type": "registry-cache", "providerConfig": provider_config(i, args.caches)}})
            names.append(ns)

        def measure(label: str, prepare) -> None:
            times, calls = [], []
            for ns in names:
                ext = prepare(ns)
                before = sum(seed.calls.values())
                start = time.perf_counter()
                op = controller.handle(ext)
                times.append(time.perf_counter() - start)
                calls.append(sum(seed.calls.values()) - before)
                assert op is not None, f"{ns}: nothing to do"
            print(f"{label}: {len(names)} Extensions x {args.caches} caches: "
                  f"median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms, "
                  f"API calls per operation {min(calls)}-{max(calls)} (median {statistics.median(calls):.0f})")

        measure("create (first reconcile: certificates made)", lambda ns: setup.get("Extension", "registry-cache", ns))

        def touch(ns: str) -> dict:
            setup.patch("Extension", "registry-cache",
                        {"metadata": {"annotations": {"gardener.cloud/operation": "reconcile"}}}, ns)
            return setup.get("Extension", "registry-cache", ns)

        measure("reconcile, nothing changed (certificates reused)", touch)
        before = dict(seed.calls)
        ext = setup.get("Extension", "registry-cache", names[0])
        controller.handle(ext)
        echo = sum(seed.calls.values()) - sum(before.values())
        print(f"a watch event that only echoes the controller's own status write: {echo} API calls")
        api.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process (controller in-process, {args.extensions} Extensions): {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
