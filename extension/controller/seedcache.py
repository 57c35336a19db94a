"""What the controller reads in the seed besides Extensions: Clusters and Secrets, read again only when changed.

Two metadata-only watches (Clusters; Secrets, keeping only those this controller reads: the ``ref-`` copies,
its TLS and node credentials Secrets, the shoot kubeconfig Secrets of ``--gardener``) tell which
resourceVersion each object has now. What was read (a GET) or written is kept by resourceVersion, in the small
shape the actuators use (of a Cluster only the Shoot's name, hibernation, resources, purpose and VPA wish; of a
Secret its data), and served from
memory while the watch reports the same version. A change reported by the watch calls ``on_change`` with the
namespace, so the controller looks at that namespace's Extension again (a read raced ahead of a watch event is
put right that way). Everything of a namespace is dropped with :meth:`forget`, and an object's entry when the
watch reports it deleted.

Without :meth:`start` (tests, tools) every read is a GET.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from extension.constants import NODE_AUTH_SECRET_LABEL, REFERENCED_RESOURCE_PREFIX, TLS_SECRET_LABEL
from extension.runtime.informer import Informer, Key
from extension.runtime.kube import Kube

Versions = dict[tuple[str, str, str], str]  # (kind, namespace, name) -> resourceVersion


def cluster_projection(cluster: dict[str, Any]) -> dict[str, Any]:
    """What the actuators use of a Cluster: the Shoot's name and namespace, hibernation, resources, purpose and
    whether it wants VPA."""
    shoot = ((cluster.get("spec") or {}).get("shoot"))
    if not isinstance(shoot, dict):
        return {"shoot": None}
    meta, spec = shoot.get("metadata") or {}, shoot.get("spec") or {}
    kept = {k: spec[k] for k in ("hibernation", "resources", "purpose") if k in spec}
    kubernetes = spec.get("kubernetes")
    if isinstance(kubernetes, dict) and "verticalPodAutoscaler" in kubernetes:
        kept["kubernetes"] = {"verticalPodAutoscaler": kubernetes["verticalPodAutoscaler"]}
    return {"shoot": {"metadata": {k: meta[k] for k in ("name", "namespace") if k in meta}, "spec": kept}}


class SeedCache:
    def __init__(self, seed: Kube, kubeconfig_secrets: Iterable[str] = (),
                 on_change: Callable[[str], None] | None = None):
        self.seed = seed
        self.on_change = on_change
        self._kubeconfig_secrets = frozenset(kubeconfig_secrets)
        self._content: dict[tuple[str, str, str], tuple[str, Any]] = {}
        # label -> namespace -> names of the Secrets with that label (its TLS and node credentials Secrets)
        self._labelled: dict[str, dict[str, set[str]]] = {TLS_SECRET_LABEL: {}, NODE_AUTH_SECRET_LABEL: {}}
        self._lock = threading.Lock()
        self.clusters: Informer[bool] | None = None
        self.secrets: Informer[str] | None = None

    # --- watching ------------------------------------------------------------------------------------
    def informers(self) -> list[Informer[Any]]:
        """The two watches (made on first call; the caller starts them)."""
        if self.clusters is None or self.secrets is None:
            self.clusters = Informer(self.seed, "Cluster", lambda obj: True, metadata_only=True,
                                     on_change=self._cluster_changed, name="Cluster")
            self.secrets = Informer(self.seed, "Secret", self._secret_record, metadata_only=True,
                                    on_change=self._secret_changed, name="Secret")
        return [self.clusters, self.secrets]

    def _secret_record(self, obj: dict[str, Any]) -> str | None:
        """Kept: the Secrets this controller reads ("ref", "kubeconfig") and its own (the label they carry)."""
        meta = obj.get("metadata") or {}
        name = meta.get("name") or ""
        labels = meta.get("labels") or {}
        for label in self._labelled:
            if labels.get(label):
                return label
        if name.startswith(REFERENCED_RESOURCE_PREFIX):
            return "ref"
        return "kubeconfig" if name in self._kubeconfig_secrets else None

    def _cluster_changed(self, key: Key, old: bool | None, new: bool | None) -> None:
        if new is None:
            self._drop(("Cluster", "", key[1]))
        if self.on_change is not None:
            self.on_change(key[1])

    def _secret_changed(self, key: Key, old: str | None, new: str | None) -> None:
        namespace, name = key
        with self._lock:
            if old in self._labelled and old != new:
                self._unindex(old, namespace, name)
            if new in self._labelled:
                self._labelled[new].setdefault(namespace, set()).add(name)
        if new is None:
            self._drop(("Secret", namespace, name))
        if self.on_change is not None:
            self.on_change(namespace)

    def _drop(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._content.pop(key, None)

    def _watched(self, kind: str) -> Informer[Any] | None:
        informer = self.clusters if kind == "Cluster" else self.secrets
        return informer if informer is not None and informer.synced.is_set() else None

    # --- reading -------------------------------------------------------------------------------------
    def current(self, kind: str, namespace: str, name: str) -> str | None:
        """The resourceVersion the watch reports now (None: not there, or not watched)."""
        informer = self._watched(kind)
        return informer.version((namespace, name)) if informer is not None else None

    def unchanged(self, versions: Versions) -> bool:
        """Whether every object still has the version recorded (only answerable while watched)."""
        for (kind, namespace, name), version in versions.items():
            if self._watched(kind) is None or self.current(kind, namespace, name) != version:
                return False
        return True

    def _read(self, kind: str, namespace: str, name: str, shape: Callable[[dict[str, Any]], Any]
              ) -> tuple[str, Any] | None:
        key = (kind, namespace, name)
        current = self.current(kind, namespace, name)
        with self._lock:
            cached = self._content.get(key)
        if cached is not None and current is not None and cached[0] == current:
            return cached
        obj = self.seed.get(kind, name, namespace or None)  # new, changed, or not seen by the watch yet
        if obj is None:
            self._drop(key)
            return None
        entry = (str(obj["metadata"].get("resourceVersion") or ""), shape(obj))
        with self._lock:
            self._content[key] = entry
        return entry

    def cluster(self, namespace: str) -> tuple[str, dict[str, Any]] | None:
        """(resourceVersion, projection) of the Cluster named like ``namespace``."""
        return self._read("Cluster", "", namespace, cluster_projection)

    def secret(self, namespace: str, name: str) -> tuple[str, dict[str, Any]] | None:
        """(resourceVersion, the Secret as read) of a Secret the controller reads."""
        return self._read("Secret", namespace, name, _secret_shape)

    def _unindex(self, label: str, namespace: str, name: str) -> None:
        names = self._labelled[label].get(namespace)
        if names is not None:
            names.discard(name)
            if not names:
                del self._labelled[label][namespace]

    def labelled(self, namespace: str, label: str) -> dict[str, dict[str, Any]]:
        """The Secrets of ``namespace`` with ``label`` (the TLS or node credentials label; name -> Secret with
        data and resourceVersion)."""
        informer = self._watched("Secret")
        if informer is None:
            return {s["metadata"]["name"]: s for s in self.seed.list("Secret", namespace, label_selector=label)}
        with self._lock:
            names = sorted(self._labelled[label].get(namespace, ()))
        out = {}
        for name in names:
            entry = self.secret(namespace, name)
            if entry is not None:
                out[name] = entry[1]
        return out

    def remember(self, written: dict[str, Any]) -> None:
        """A Secret the controller wrote, as the API server answered (so it is not read back, and a TLS Secret
        is known to be there before its watch event comes)."""
        meta = written.get("metadata") or {}
        namespace, name = meta.get("namespace") or "", meta.get("name") or ""
        with self._lock:
            self._content[("Secret", namespace, name)] = (str(meta.get("resourceVersion") or ""),
                                                          _secret_shape(written))
            for label, by_namespace in self._labelled.items():
                if (meta.get("labels") or {}).get(label):
                    by_namespace.setdefault(namespace, set()).add(name)

    def removed(self, namespace: str, name: str) -> None:
        """A Secret the controller deleted."""
        with self._lock:
            self._content.pop(("Secret", namespace, name), None)
            for label in self._labelled:
                self._unindex(label, namespace, name)

    def forget(self, namespace: str) -> None:
        with self._lock:
            for key in [k for k in self._content if k[1] == namespace or (k[0] == "Cluster" and k[2] == namespace)]:
                del self._content[key]

    def __len__(self) -> int:
        return len(self._content)


def _secret_shape(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    return {"apiVersion": "v1", "kind": "Secret", "type": obj.get("type"), "immutable": obj.get("immutable"),
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "resourceVersion", "uid") if k in meta},
            "data": dict(obj.get("data") or {})}
