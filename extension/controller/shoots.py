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
from typing import Any

from extension.constants import ERR_INFRA_DEPENDENCIES, FIELD_MANAGER
from extension.errors import ReconcileError
from extension.runtime.kube import Kube, api_client
from extension.runtime.metrics import SHOOTS_HOST

ShootTarget = Callable[[str], Kube]


class OneCluster:
    """Every namespace's caches go to one cluster (``shared``): what is delivered there can be watched."""

    def __init__(self, kube: Kube):
        self.shared = kube

    def __call__(self, namespace: str) -> Kube:
        return self.shared


def shared_cluster(target: ShootTarget) -> Kube | None:
    """The one cluster every namespace's caches go to, if so."""
    return target.shared if isinstance(target, OneCluster) else None


def same_cluster(seed: Kube) -> ShootTarget:
    return OneCluster(seed)


def kubeconfig_file(path: str, field_manager: str = FIELD_MANAGER,
                    fence: Callable[[], bool] | None = None) -> ShootTarget:
    return OneCluster(Kube.from_kubeconfig(path, field_manager=field_manager, fence=fence))


def gardener_secret_names(environ: dict[str, str] | None = None) -> list[str]:
    """The Secrets gardenlet provides for extensions to reach a shoot, in the order Gardener tries them."""
    env = os.environ if environ is None else environ
    return ["gardener"] if env.get("GARDENER_SHOOT_CLIENT") == "external" else ["gardener-internal", "gardener"]


class KubeconfigSecret:
    """The cluster of the kubeconfig in a Secret of each namespace; a client per namespace, made again when the
    Secret changes. ``read(namespace, name)`` reads a Secret (the seed cache's, once the controller runs: not
    read again while unchanged); ``forget(namespace)`` drops a namespace's client."""

    def __init__(self, seed: Kube, secret_names: list[str], field_manager: str = FIELD_MANAGER,
                 fence: Callable[[], bool] | None = None):
        self.secret_names = secret_names
        self.field_manager = field_manager
        self.fence = fence
        self.read: Callable[[str, str], dict[str, Any] | None] = lambda ns, name: seed.get("Secret", name, ns)
        self._clients: dict[str, tuple[str, Kube]] = {}
        self._lock = threading.Lock()

    def __call__(self, namespace: str) -> Kube:
        secret = None
        for name in self.secret_names:
            secret = self.read(namespace, name)
            if secret is not None and "kubeconfig" in (secret.get("data") or {}):
                break
            secret = None
        if secret is None:
            raise ReconcileError(f"no Secret {' or '.join(self.secret_names)} with the shoot's kubeconfig (key "
                                 f"kubeconfig) in {namespace}", [ERR_INFRA_DEPENDENCIES])
        version = secret["metadata"].get("uid", "") + "/" + secret["metadata"].get("resourceVersion", "")
        with self._lock:
            if namespace in self._clients and self._clients[namespace][0] == version:
                return self._clients[namespace][1]
            with tempfile.NamedTemporaryFile("wb", suffix=".kubeconfig") as handle:
                handle.write(base64.b64decode(secret["data"]["kubeconfig"]))
                handle.flush()
                api = api_client(handle.name)
            # one API server per shoot: one host label for all of them (rest_client_*: no label value per Extension)
            kube = Kube(api, field_manager=self.field_manager, fence=self.fence, metrics_host=SHOOTS_HOST)
            self._clients[namespace] = (version, kube)
            return kube

    def forget(self, namespace: str) -> None:
        with self._lock:
            self._clients.pop(namespace, None)


def kubeconfig_secret(seed: Kube, secret_names: str | list[str], field_manager: str = FIELD_MANAGER,
                      fence: Callable[[], bool] | None = None) -> ShootTarget:
    return KubeconfigSecret(seed, [secret_names] if isinstance(secret_names, str) else list(secret_names),
                            field_manager, fence)
