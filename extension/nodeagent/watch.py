"""What the node agent reads of the API server when it runs for good: watched, not polled.

The ConfigMaps: one LIST by label (``registry-cache.gardener.cloud/node-config=true``), then a WATCH from its
resourceVersion (:class:`extension.runtime.informer.Informer`: bookmarks; a watch the server ends after its timeout is
started again from the last resourceVersion seen; 410 Gone lists again, and what went meanwhile is seen as
deleted; the API server away: again after 0.5 s, doubling up to 30 s). Every change wakes the agent.

The Secret ``registry-cache-node-auth``: watched by name (``fieldSelector=metadata.name=...``, which RBAC's
``resourceNames`` allow to list and watch), and only while a ConfigMap names one of its keys. Its header values
can change without any ConfigMap changing (the ConfigMaps name only the keys), so reading it when a ConfigMap
changes would miss new credentials; polling it would cost a request per node every few seconds. A watch costs
one request per node every few minutes, and nothing on a cluster without ``run --node-auth``.

Idle, an agent makes no request beyond each watch's renewal (every 5-10 minutes, spread at random so that the
nodes of a cluster do not renew together). Its timer (re-probing caches that do not answer yet, checking ROOT)
reads what is in memory. Not imported by :mod:`.agent` or :mod:`.plan` (they stay pure and light): the command
line uses it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from extension.constants import NODE_AUTH_SHOOT_SECRET, NODE_CONFIG_LABEL
from extension.nodeagent.agent import NodeAgent, secret_strings
from extension.runtime.informer import Informer
from extension.runtime.kube import Kube

log = logging.getLogger("registry-cache.node-agent")

WATCH_SECONDS = (300, 600)  # a watch's timeout, picked at random per watch: client-go's 5-10 minutes
SECRET_LIST_WAIT = 5.0  # seconds a sync waits for the Secret's first LIST


class NotListedYet(Exception):
    """The first LIST has not come back yet (the API server away at start)."""


def _configmap_record(obj: dict[str, Any]) -> dict[str, Any]:
    """What :func:`.plan.desired_state` reads of a ConfigMap: its name, namespace, age and data."""
    meta = obj.get("metadata") or {}
    return {"metadata": {k: meta[k] for k in ("name", "namespace", "creationTimestamp") if k in meta},
            "data": obj.get("data") or {}}


def _watch_seconds() -> int:
    return random.randint(*WATCH_SECONDS)


class WatchedSource:
    """The node-config ConfigMaps and the node-auth Secret of ``namespace``, kept by watches; ``on_change`` is
    called (on a watch's thread) whenever either changes."""

    def __init__(self, kube: Kube, namespace: str, on_change: Callable[[], None]):
        self.kube, self.namespace, self.on_change = kube, namespace, on_change
        self.configmaps: Informer[dict[str, Any]] = Informer(
            kube, "ConfigMap", _configmap_record, namespace=namespace,
            label_selector=f"{NODE_CONFIG_LABEL}=true", on_change=lambda *_: on_change(), name="node-config",
            watch_seconds=_watch_seconds())
        self._secret: Informer[dict[str, str]] | None = None
        self._secret_stop = threading.Event()
        self._lock = threading.Lock()

    def start(self, stop: threading.Event) -> WatchedSource:
        self.configmaps.start(stop)
        return self

    def close(self) -> None:
        self.configmaps.close()
        self.release_node_auth()

    def wait_listed(self, stop: threading.Event, timeout: float | None = None) -> bool:
        """Wait for the ConfigMaps' first LIST (or ``stop``); whether it came."""
        waited = 0.0
        while not self.configmaps.synced.wait(0.2):
            waited += 0.2
            if stop.is_set() or (timeout is not None and waited >= timeout):
                return False
        return True

    # --- what NodeAgent reads ----------------------------------------------------------------------------
    def list_configmaps(self) -> list[dict[str, Any]]:
        if not self.configmaps.synced.is_set():
            raise NotListedYet("the ConfigMaps have not been listed yet")
        return [record for _, record in self.configmaps.items()]

    def read_node_auth(self) -> Mapping[str, str]:
        """The node-auth Secret's data (a watch of it starts with the first call); {} while there is none."""
        with self._lock:
            if self._secret is None:
                self._secret_stop = threading.Event()
                self._secret = Informer(
                    self.kube, "Secret", secret_strings, namespace=self.namespace,
                    field_selector=f"metadata.name={NODE_AUTH_SHOOT_SECRET}",
                    on_change=lambda *_: self.on_change(), name="node-auth", watch_seconds=_watch_seconds())
                self._secret.start(self._secret_stop)
                log.info("watching Secret %s/%s: a cache only serves nodes", self.namespace, NODE_AUTH_SHOOT_SECRET)
            secret = self._secret
        if not secret.synced.wait(SECRET_LIST_WAIT):
            raise NotListedYet(f"Secret {NODE_AUTH_SHOOT_SECRET} has not been listed yet")
        return secret.get((self.namespace, NODE_AUTH_SHOOT_SECRET)) or {}

    def release_node_auth(self) -> None:
        """No ConfigMap names a key of the node-auth Secret (any more): its watch ends."""
        with self._lock:
            secret, self._secret, stop = self._secret, None, self._secret_stop
        if secret is not None:
            stop.set()
            secret.close()
            log.info("no longer watching Secret %s/%s: no cache only serves nodes", self.namespace,
                     NODE_AUTH_SHOOT_SECRET)


def watching_agent(kube: Kube, namespace: str, root: str | Path, **kw: Any) -> tuple[NodeAgent, WatchedSource]:
    """A :class:`NodeAgent` fed by watches (start the source, then ``agent.run(interval, stop,
    ready=source.wait_listed)``): every change of the ConfigMaps or the Secret wakes it."""
    agent = NodeAgent(lambda: [], root, **kw)
    source = WatchedSource(kube, namespace, agent.wake)
    agent.list_configmaps = source.list_configmaps
    agent.read_node_auth = source.read_node_auth
    agent.release_node_auth = source.release_node_auth
    return agent, source
