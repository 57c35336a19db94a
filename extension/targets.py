"""Where the shoot is: the API server the caches are delivered to, per seed namespace.

- ``same``: the seed's own API server (kind, the local control plane, standalone mode).
- a kubeconfig file: one shoot cluster for every namespace (tests, a single-cluster setup).
- a Secret in each seed namespace holding a kubeconfig (key ``kubeconfig``), as Gardener hands extensions a
  way into the shoot; the client is rebuilt when the Secret changes.
"""

from __future__ import annotations

import base64
import tempfile
import threading
from typing import Callable

from kubernetes import config as k8s_config

from .kube import Kube

ShootTarget = Callable[[str], Kube]


def same_cluster(seed: Kube) -> ShootTarget:
    return lambda namespace: seed


def kubeconfig_file(path: str, field_manager: str = "registry-cache") -> ShootTarget:
    kube = Kube.from_kubeconfig(path, field_manager=field_manager)
    return lambda namespace: kube


def kubeconfig_secret(seed: Kube, secret_name: str, field_manager: str = "registry-cache") -> ShootTarget:
    cache: dict[str, tuple[str, Kube]] = {}
    lock = threading.Lock()

    def target(namespace: str) -> Kube:
        secret = seed.get("Secret", secret_name, namespace)
        if secret is None or "kubeconfig" not in (secret.get("data") or {}):
            from .actuator import ReconcileError
            raise ReconcileError(f"Secret {namespace}/{secret_name} with the shoot's kubeconfig (key kubeconfig) "
                                 "not found", ["ERR_INFRA_DEPENDENCIES"])
        version = secret["metadata"]["resourceVersion"]
        with lock:
            if namespace in cache and cache[namespace][0] == version:
                return cache[namespace][1]
            with tempfile.NamedTemporaryFile("wb", suffix=".kubeconfig") as handle:
                handle.write(base64.b64decode(secret["data"]["kubeconfig"]))
                handle.flush()
                api = k8s_config.new_client_from_config(config_file=handle.name)
            kube = Kube(api, field_manager=field_manager)
            cache[namespace] = (version, kube)
            return kube

    return target
