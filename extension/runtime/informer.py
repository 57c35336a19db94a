"""Informers: list once, then watch, one kind; a small record per object in memory; handlers on every change.

What controller-runtime's caches do, reduced to what this controller needs, on threads (the controller's code
is synchronous). One :class:`Informer` per kind and selector:

- lists in pages of 100 (one snapshot; a page is turned into records before the next is read, so a start
  never holds the objects themselves), then watches from the list's resourceVersion with bookmarks; a watch
  that ends is started again from the last resourceVersion seen, one the API server no longer serves
  (410 Gone) by listing again, and what disappeared meanwhile is reported as deleted;
- ``metadata_only`` asks the API server for PartialObjectMetadata (labels, annotations, resourceVersion,
  managedFields; no spec, no data): for the objects the controller only needs to know exist and were not
  changed, the events stay small whatever the objects hold;
- ``transform`` turns each object into the record kept (or None: not kept), so memory is what the records
  need, not what the objects hold; the raw objects are dropped at once;
- ``on_change(key, old, new)`` is called on the informer's thread for every change of a kept record
  (``new`` None: deleted); it must be quick (the controller only queues work there);
- ``on_object(obj)`` (optional) is called with each object listed or changed, before it is dropped (what
  kopf's ``on.event`` handlers get), on the informer's thread; a deletion comes through ``on_change``;
- an object nested too deep to decode (:mod:`extension.runtime.jsondecode`) is skipped, not a reason to stop: the
  client names it (a log line, an Event); its last decoded record, if any, is kept until it changes again,
  and its deletion is still seen.

Records are replaced, never changed in place, so :meth:`get` and :meth:`items` may hand them out without copies.

Metrics (:mod:`extension.runtime.metrics`): ``registry_cache_informer_synced{informer}`` 0 from :meth:`start`
until the first list is in, then 1; ``registry_cache_informer_objects{informer}`` the records kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import urllib3

from extension.runtime import metrics
from extension.runtime.kube import ApiError, Kube

log = logging.getLogger(__name__)

R = TypeVar("R")
Key = tuple[str, str]  # (namespace, or "" for cluster-scoped objects; name)
OnChange = Callable[[Key, "R | None", "R | None"], None]


class _Gone(Exception):
    """The resourceVersion watched from is no longer served (410): list again."""


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


class Informer(Generic[R]):
    def __init__(self, kube: Kube, kind: str, transform: Callable[[dict[str, Any]], R | None], *,
                 namespace: str | None = None, label_selector: str | None = None, metadata_only: bool = False,
                 on_change: Callable[[Key, R | None, R | None], None] | None = None, name: str | None = None,
                 watch_seconds: int = 300, page_size: int = 100,
                 on_object: Callable[[dict[str, Any]], None] | None = None, field_selector: str | None = None):
        self.kube, self.kind, self.transform = kube, kind, transform
        self.namespace, self.label_selector, self.metadata_only = namespace, label_selector, metadata_only
        self.field_selector = field_selector
        self.on_change = on_change
        self.on_object = on_object
        self.name = name or kind
        self.watch_seconds = watch_seconds
        self.page_size = page_size
        self.synced = threading.Event()  # the first list is in the store
        # since when (monotonic) its lists and watches fail without a success in between; None: watching
        self.failing_since: float | None = None
        self._store: dict[Key, tuple[str, R]] = {}  # key -> (resourceVersion, record)
        self._lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None
        self._thread: threading.Thread | None = None

    # --- reading -------------------------------------------------------------------------------------
    def get(self, key: Key) -> R | None:
        entry = self._store.get(key)
        return entry[1] if entry is not None else None

    def version(self, key: Key) -> str | None:
        entry = self._store.get(key)
        return entry[0] if entry is not None else None

    def items(self) -> list[tuple[Key, R]]:
        with self._lock:
            return [(k, v[1]) for k, v in self._store.items()]

    def __len__(self) -> int:
        return len(self._store)

    # --- running -------------------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> Informer[R]:
        if not self.synced.is_set():  # (registry_cache_informer_synced: 0 until the first list is in)
            metrics.INFORMER_SYNCED.labels(self.name).set(0)
        self._thread = threading.Thread(target=self.run, args=(stop,), daemon=True, name=f"informer-{self.name}")
        self._thread.start()
        return self

    def alive(self) -> bool:
        """Its thread runs (it was started and has not ended)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _failing(self) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()

    def close(self) -> None:
        """End a watch that is waiting for events (at shutdown)."""
        response = self._response
        if response is not None:
            try:
                response.shutdown()  # urllib3 >= 2.3
            except Exception:  # noqa: BLE001 - closing what may be closed already
                pass

    def run(self, stop: threading.Event) -> None:
        version: str | None = None
        delay = 0.5
        while not stop.is_set():
            try:
                if version is None:
                    version = self._list()
                    self.failing_since = None
                    self.synced.set()
                    metrics.INFORMER_SYNCED.labels(self.name).set(1)
                version = self._watch(version, stop)
                delay = 0.5
            except _Gone:
                log.info("informer %s: resourceVersion too old, listing again", self.name)
                version = None
            except (ApiError, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if stop.is_set():
                    break
                self._failing()
                if isinstance(exc, ApiError) and exc.status == 410:  # Gone, as the answer to the request itself
                    version = None
                log.warning("informer %s: %s; again in %.1fs", self.name,
                            exc.describe() if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}", delay)
                stop.wait(delay)
                delay = min(30.0, delay * 2)
            except Exception:  # a bug must not end the watch for good: list again
                if stop.is_set():
                    break
                self._failing()
                log.exception("informer %s failed; listing again in %.1fs", self.name, delay)
                version = None
                stop.wait(delay)
                delay = min(30.0, delay * 2)
        self.close()

    def _list(self) -> str:
        seen: set[Key] = set()
        version = ""
        skipped: list[dict[str, Any]] = []  # nested too deep to decode: still there, its old record kept
        for page, page_version in self.kube.pages(self.kind, self.namespace, self.label_selector,
                                                  self.metadata_only, limit=self.page_size, skipped=skipped,
                                                  field_selector=self.field_selector):
            version = page_version
            for obj in page:  # one page at a time: only the records stay
                seen.add(key_of(obj))
                self._apply("ADDED", obj)
            page.clear()
            seen.update(key_of(obj) for obj in skipped)
            skipped.clear()
        for key in [k for k in list(self._store) if k not in seen]:  # gone while we were not watching
            self._remove(key)
        metrics.INFORMER_OBJECTS.labels(self.name).set(len(self._store))
        return version

    def _watch(self, version: str, stop: threading.Event) -> str:
        response = self.kube.watch(self.kind, version, self.namespace, self.label_selector, self.metadata_only,
                                   timeout_seconds=self.watch_seconds, field_selector=self.field_selector)
        self._response = response
        self.failing_since = None  # the API server answered the watch: watching
        buffer = b""
        try:
            for chunk in response.stream(65536):
                if stop.is_set():
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event, deep = self.kube.watch_event(line, self.kind)
                        version = self._event(event, version, deep)
        finally:
            self._response = None
            response.release_conn()
        return version

    def _event(self, event: dict[str, Any], version: str, deep: bool = False) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise ApiError("WATCH", self.kind, int(obj.get("code") or 500), obj)
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind == "BOOKMARK":
            return new_version
        if deep and kind != "DELETED":
            return new_version  # skipped (and named by the client); what was known of it stays
        if kind == "DELETED":
            self._remove(key_of(obj))
        elif kind in ("ADDED", "MODIFIED"):
            self._apply(kind, obj)
        metrics.INFORMER_OBJECTS.labels(self.name).set(len(self._store))
        return new_version

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        old = self._store.get(key)
        if old is not None and old[0] == version:
            return  # a relist that found it unchanged
        if self.on_object is not None:
            try:
                self.on_object(obj)
            except Exception:  # a handler's bug must not end the watch
                log.exception("informer %s: handler failed for %s/%s", self.name, *key)
        record = self.transform(obj)
        with self._lock:
            if record is None:
                self._store.pop(key, None)
            else:
                self._store[key] = (version, record)
        if self.on_change is not None and (record is not None or old is not None):
            self._notify(key, old[1] if old is not None else None, record)

    def _remove(self, key: Key) -> None:
        with self._lock:
            old = self._store.pop(key, None)
        if old is not None and self.on_change is not None:
            self._notify(key, old[1], None)

    def _notify(self, key: Key, old: R | None, new: R | None) -> None:
        assert self.on_change is not None
        try:
            self.on_change(key, old, new)
        except Exception:  # a handler's bug must not end the watch
            log.exception("informer %s: handler failed for %s/%s", self.name, *key)


def wait_synced(informers: list[Informer[Any]], stop: threading.Event, timeout: float | None = None) -> bool:
    """Wait until every informer listed once (or ``stop``); whether they all did."""
    for informer in informers:
        while not informer.synced.wait(0.2):
            if stop.is_set():
                return False
            if timeout is not None:
                timeout -= 0.2
                if timeout <= 0:
                    return False
    return True
