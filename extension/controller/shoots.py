"""Where the shoot is: the API server the caches are delivered to, per seed namespace.

- ``same``: the seed's own API server (kind, the local control plane, standalone mode).
- a kubeconfig file: one shoot cluster for every namespace (tests, a single-cluster setup).
- a Secret in each seed namespace holding a kubeconfig (key ``kubeconfig``), as Gardener hands extensions a
  way into the shoot; the client is rebuilt when the Secret changes (gardenlet refreshes the token in it).
  Under Gardener: ``gardener-internal`` (the in-cluster address), else ``gardener``; with
  ``GARDENER_SHOOT_CLIENT=external`` only ``gardener`` (as ``extensions/pkg/util.NewClientForShoot``).
"""

from __future__ import annotations

import base64
import os
import tempfile
import threading
from collections.abc import Callable

from kubernetes import config as k8s_config

from extension.constants import ERR_INFRA_DEPENDENCIES, FIELD_MANAGER
from extension.errors import ReconcileError
from extension.kube import Kube

ShootTarget = Callable[[str], Kube]


def same_cluster(seed: Kube) -> ShootTarget:
    return lambda namespace: seed


def kubeconfig_file(path: str, field_manager: str = FIELD_MANAGER) -> ShootTarget:
    kube = Kube.from_kubeconfig(path, field_manager=field_manager)
    return lambda namespace: kube


def gardener_secret_names(environ: dict[str, str] | None = None) -> list[str]:
    """The Secrets gardenlet provides for extensions to reach a shoot, in the order Gardener tries them."""
    env = os.environ if environ is None else environ
    return ["gardener"] if env.get("GARDENER_SHOOT_CLIENT") == "external" else ["gardener-internal", "gardener"]


def kubeconfig_secret(seed: Kube, secret_names: str | list[str], field_manager: str = FIELD_MANAGER) -> ShootTarget:
    cache: dict[str, tuple[str, Kube]] = {}
    lock = threading.Lock()
    candidates = [secret_names] if isinstance(secret_names, str) else list(secret_names)

    def target(namespace: str) -> Kube:
        secret = None
        for name in candidates:
            secret = seed.get("Secret", name, namespace)
            if secret is not None and "kubeconfig" in (secret.get("data") or {}):
                break
            secret = None
        if secret is None:
            raise ReconcileError(f"no Secret {' or '.join(candidates)} with the shoot's kubeconfig (key kubeconfig) "
                                 f"in {namespace}", [ERR_INFRA_DEPENDENCIES])
        version = secret["metadata"]["uid"] + "/" + secret["metadata"]["resourceVersion"]
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
