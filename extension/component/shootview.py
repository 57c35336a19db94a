"""What is delivered in a shoot: the objects of every owner, as small records (:class:`Live`).

Two ways to know it, one interface (:meth:`objects`, :meth:`owner_of`):

- :class:`WatchedView` when one cluster receives the caches of every Extension (the seed itself, or one
  ``--shoot-kubeconfig``): a watch per kind on the target namespace, selected by the managed-by label (volume
  claims by the owner label), metadata only (Services whole, for their cluster IP). Nothing is listed per
  reconcile; a change made by someone else reaches :attr:`on_change` at once.
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
from extension.informer import Informer, Key
from extension.kube import Kube

PRUNED_KINDS = ("StatefulSet", "Secret", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap")
ObjectKey = tuple[str, str]  # (kind, name) in the target namespace


@dataclass(frozen=True, slots=True)
class Live:
    owner: str
    version: str
    rendered: str | None  # the rendered-hash annotation
    foreign: bool  # changed by another field manager (not only its status)
    cluster_ip: str | None = None  # Services


def live_record(obj: dict[str, Any], field_manager: str = c.FIELD_MANAGER) -> Live:
    meta = obj.get("metadata") or {}
    foreign = any(entry.get("manager") != field_manager and not entry.get("subresource")
                  for entry in meta.get("managedFields") or ())
    cluster_ip = (obj.get("spec") or {}).get("clusterIP")  # only Services are watched whole
    return Live(owner=sys.intern((meta.get("labels") or {}).get(c.OWNER_LABEL, "")),
                version=str(meta.get("resourceVersion", "")),
                rendered=(meta.get("annotations") or {}).get(c.RENDERED_HASH_ANNOTATION), foreign=foreign,
                cluster_ip=cluster_ip if isinstance(cluster_ip, str) else None)


def kinds(vpa: bool) -> tuple[str, ...]:
    return PRUNED_KINDS + (("VerticalPodAutoscaler",) if vpa else ()) + ("PersistentVolumeClaim",)


def _selector(kind: str) -> str:
    # volumes are made by the StatefulSet controller from the claim template: only the owner label is on them
    return c.OWNER_LABEL if kind == "PersistentVolumeClaim" else f"{c.MANAGED_BY_LABEL}={c.MANAGED_BY}"


class ShootView(Protocol):
    watched: bool

    def objects(self, owner: str) -> dict[ObjectKey, Live]: ...

    def owner_of(self, kind: str, name: str) -> str | None: ...


class WatchedView:
    """Watches of the target namespace of one cluster; ``on_change(owner, kind, name, live)`` for every change
    (``live`` None: deleted)."""

    watched = True

    def __init__(self, kube: Kube, namespace: str, vpa: bool,
                 on_change: Callable[[str, str, str, Live | None], None] | None = None):
        self.kube, self.namespace = kube, namespace
        self.on_change = on_change
        self._by_owner: dict[str, dict[ObjectKey, Live]] = {}
        self._owner: dict[ObjectKey, str] = {}
        self._lock = threading.Lock()
        self.informers: list[Informer[Live]] = [
            Informer(kube, kind, live_record, namespace=namespace, label_selector=_selector(kind),
                     metadata_only=kind != "Service", on_change=self._changed(kind), name=f"shoot-{kind}")
            for kind in kinds(vpa)]

    def _changed(self, kind: str) -> Callable[[Key, Live | None, Live | None], None]:
        def changed(key: Key, old: Live | None, new: Live | None) -> None:
            name = key[1]
            okey = (kind, name)
            with self._lock:
                if old is not None and old.owner:
                    owned = self._by_owner.get(old.owner)
                    if owned is not None:
                        owned.pop(okey, None)
                        if not owned:
                            del self._by_owner[old.owner]
                self._owner.pop(okey, None)
                if new is not None and new.owner:
                    self._by_owner.setdefault(new.owner, {})[okey] = new
                    self._owner[okey] = new.owner
            owner = (new or old).owner if (new or old) is not None else ""  # type: ignore[union-attr]
            if owner and self.on_change is not None:
                self.on_change(owner, kind, name, new)
        return changed

    def objects(self, owner: str) -> dict[ObjectKey, Live]:
        with self._lock:
            return dict(self._by_owner.get(owner, {}))

    def owner_of(self, kind: str, name: str) -> str | None:
        return self._owner.get((kind, name))

    def owners(self) -> int:
        return len(self._by_owner)


class ListedView:
    """One LIST per kind, metadata only, made once per instance (one reconcile)."""

    watched = False

    def __init__(self, kube: Kube, namespace: str, vpa: bool):
        self.kube, self.namespace, self.vpa = kube, namespace, vpa
        self._all: dict[ObjectKey, Live] | None = None

    def _load(self) -> dict[ObjectKey, Live]:
        if self._all is None:
            found: dict[ObjectKey, Live] = {}
            for kind in kinds(self.vpa):
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
