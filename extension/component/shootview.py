"""What is delivered in a shoot: the objects of every owner, as small records (:class:`Live`).

Two ways to know it, one interface (:meth:`objects`, :meth:`owner_of`):

- :class:`WatchedView` when one cluster receives the caches of every Extension (the seed itself, or one
  ``--shoot-kubeconfig``): a watch per kind on the target namespace, selected by the managed-by label (volume
  claims by the owner label), metadata only (Services whole, for their cluster IP; StatefulSets whole, for the
  replicas they want and have ready: the caches' health condition is computed from the records). Nothing is
  listed per reconcile; a change made by someone else reaches :attr:`on_change` at once.
- :class:`ListedView` when each shoot is its own cluster (Gardener): one LIST per kind of that cluster's
  managed objects, metadata only, per reconcile (only that shoot's own objects are there).

A record says who owns the object, its resourceVersion, the hash of the rendered object it was last applied
from (the annotation :data:`~extension.constants.RENDERED_HASH_ANNOTATION`) and whether a field manager other
than the controller changed it (managedFields, status aside): what the component needs to decide that an
object is as delivered without reading or writing it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from extension import constants as c
from extension.errors import ReconcileError
from extension.runtime.informer import Informer, Key
from extension.runtime.kube import Kube

PRUNED_KINDS = ("StatefulSet", "Secret", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap")
# kinds a shoot may or may not serve (CRDs): watched or listed only where they are served
OPTIONAL_KINDS = ("VerticalPodAutoscaler", "PrometheusRule", "PodMonitor")
ObjectKey = tuple[str, str]  # (kind, name) in the target namespace


@dataclass(frozen=True, slots=True)
class Live:
    owner: str
    version: str
    rendered: str | None  # the rendered-hash annotation
    foreign: bool  # changed by another field manager (not only its status)
    cluster_ip: str | None = None  # Services
    replicas: int | None = None  # StatefulSets: spec.replicas
    ready: int | None = None  # StatefulSets: status.readyReplicas


def live_record(obj: dict[str, Any], field_manager: str = c.FIELD_MANAGER) -> Live:
    meta = obj.get("metadata") or {}
    foreign = any(entry.get("manager") != field_manager and not entry.get("subresource")
                  for entry in meta.get("managedFields") or ())
    spec = obj.get("spec") or {}  # only Services and StatefulSets are watched whole
    cluster_ip = spec.get("clusterIP")
    replicas = ready = None
    if obj.get("kind") == "StatefulSet" and spec:
        replicas = spec.get("replicas", 1)
        ready = (obj.get("status") or {}).get("readyReplicas") or 0
    return Live(owner=sys.intern((meta.get("labels") or {}).get(c.OWNER_LABEL, "")),
                version=str(meta.get("resourceVersion", "")),
                rendered=(meta.get("annotations") or {}).get(c.RENDERED_HASH_ANNOTATION), foreign=foreign,
                cluster_ip=cluster_ip if isinstance(cluster_ip, str) else None,
                replicas=replicas if isinstance(replicas, int) else None,
                ready=ready if isinstance(ready, int) else None)


WHOLE_KINDS = ("Service", "StatefulSet")  # watched whole, not as metadata


def _selector(kind: str) -> str:
    # volumes are made by the StatefulSet controller from the claim template: only the owner label is on them
    return c.OWNER_LABEL if kind == "PersistentVolumeClaim" else f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY}"


class ShootView(Protocol):
    watched: bool

    def watch(self, kinds: tuple[str, ...]) -> None:
        """Know these kinds too (volume claims always)."""

    def objects(self, owner: str) -> dict[ObjectKey, Live]:
        """Everything of ``owner``."""

    def owner_of(self, kind: str, name: str) -> str | None:
        """Who owns an object (None: nobody, or not there)."""

    def live(self, kind: str, name: str) -> Live | None:
        """Any managed object, shared ones (no owner) included."""

    def others_have(self, kind: str, owner: str) -> bool:
        """Whether an owner other than ``owner`` has objects of ``kind`` there."""


class WatchedView:
    """Watches of the target namespace of one cluster; ``on_change(owner, kind, name, live)`` for every change
    (``live`` None: deleted). The kinds the shoot may not serve are watched from the first time they are
    wanted (:meth:`watch`) on."""

    watched = True

    def __init__(self, kube: Kube, namespace: str, kinds: tuple[str, ...] = PRUNED_KINDS,
                 on_change: Callable[[str, str, str, Live | None], None] | None = None):
        self.kube, self.namespace = kube, namespace
        self.on_change = on_change
        self._by_owner: dict[str, dict[ObjectKey, Live]] = {}
        self._all: dict[ObjectKey, Live] = {}
        self._owners: dict[str, dict[str, int]] = {}  # kind -> owner -> how many objects
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self.informers: list[Informer[Live]] = []
        self.watch(kinds)

    def _informer(self, kind: str) -> Informer[Live]:
        return Informer(self.kube, kind, live_record, namespace=self.namespace, label_selector=_selector(kind),
                        metadata_only=kind not in WHOLE_KINDS, on_change=self._changed(kind), name=f"shoot-{kind}")

    def start(self, stop: threading.Event) -> None:
        """Remember ``stop`` for the watches started later (the caller starts :attr:`informers`)."""
        self._stop = stop

    def watch(self, kinds: tuple[str, ...]) -> None:
        with self._lock:
            new = [self._informer(kind) for kind in (*kinds, "PersistentVolumeClaim")
                   if kind not in {i.kind for i in self.informers}]
            self.informers.extend(new)
        if self._stop is not None:
            for informer in new:  # a kind served since the start: watched from now on
                informer.start(self._stop)
            for informer in new:
                if not informer.synced.wait(30):
                    raise ReconcileError(f"the watch of {informer.kind} in {self.namespace} does not start")

    def _changed(self, kind: str) -> Callable[[Key, Live | None, Live | None], None]:
        def changed(key: Key, old: Live | None, new: Live | None) -> None:
            name = key[1]
            okey = (kind, name)
            with self._lock:
                if old is not None:
                    self._all.pop(okey, None)
                    if old.owner:
                        owned = self._by_owner.get(old.owner)
                        if owned is not None:
                            owned.pop(okey, None)
                            if not owned:
                                del self._by_owner[old.owner]
                        counts = self._owners.get(kind, {})
                        counts[old.owner] = counts.get(old.owner, 1) - 1
                        if counts[old.owner] <= 0:
                            del counts[old.owner]
                if new is not None:
                    self._all[okey] = new
                    if new.owner:
                        self._by_owner.setdefault(new.owner, {})[okey] = new
                        counts = self._owners.setdefault(kind, {})
                        counts[new.owner] = counts.get(new.owner, 0) + 1
            owner = (new or old).owner if (new or old) is not None else ""  # type: ignore[union-attr]
            if owner and self.on_change is not None:
                self.on_change(owner, kind, name, new)
        return changed

    def objects(self, owner: str) -> dict[ObjectKey, Live]:
        with self._lock:
            return dict(self._by_owner.get(owner, {}))

    def owner_of(self, kind: str, name: str) -> str | None:
        live = self._all.get((kind, name))
        return live.owner if live is not None and live.owner else None

    def live(self, kind: str, name: str) -> Live | None:
        return self._all.get((kind, name))

    def others_have(self, kind: str, owner: str) -> bool:
        with self._lock:
            counts = self._owners.get(kind, {})
            return len(counts) - (1 if owner in counts else 0) > 0

    def owners(self) -> int:
        return len(self._by_owner)


class ListedView:
    """One LIST per kind, metadata only, made once per instance (one reconcile)."""

    watched = False

    def __init__(self, kube: Kube, namespace: str, kinds: tuple[str, ...] = PRUNED_KINDS):
        self.kube, self.namespace = kube, namespace
        self.kinds = (*kinds, "PersistentVolumeClaim")
        self._all: dict[ObjectKey, Live] | None = None

    def watch(self, kinds: tuple[str, ...]) -> None:
        wanted = tuple(k for k in (*kinds, "PersistentVolumeClaim") if k not in self.kinds)
        if wanted:
            self.kinds += wanted
            self._all = None

    def _load(self) -> dict[ObjectKey, Live]:
        if self._all is None:
            found: dict[ObjectKey, Live] = {}
            for kind in self.kinds:
                for obj in self.kube.list(kind, self.namespace, label_selector=_selector(kind),
                                          metadata_only=kind != "Service"):
                    found[(kind, obj["metadata"]["name"])] = live_record(obj)
            self._all = found
        return self._all

    def objects(self, owner: str) -> dict[ObjectKey, Live]:
        return {k: v for k, v in self._load().items() if v.owner == owner}

    def owner_of(self, kind: str, name: str) -> str | None:
        live = self._load().get((kind, name))
        return live.owner if live is not None and live.owner else None

    def live(self, kind: str, name: str) -> Live | None:
        return self._load().get((kind, name))

    def others_have(self, kind: str, owner: str) -> bool:
        return any(k == kind and v.owner and v.owner != owner for (k, _), v in self._load().items())
