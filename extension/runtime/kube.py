"""A small, explicit Kubernetes client for the few kinds this extension touches.

Server-side apply, get, list, patch and delete as plain JSON over the ``kubernetes`` package's ApiClient
(its authentication, TLS and kubeconfig handling), with no discovery round trips: every call is one request,
which keeps the calls of a reconcile few and countable (:attr:`Kube.calls`, by verb: GET, LIST, WATCH, PATCH,
POST, DELETE; and client-go's ``rest_client_requests_total`` and ``rest_client_request_duration_seconds``:
:mod:`extension.runtime.metrics`). :meth:`Kube.watch` opens a watch stream (:mod:`extension.runtime.informer`
reads it). A ``fence`` refuses writes once this process may no longer make them (leader election:
:mod:`extension.runtime.leader`).

An object nested deeper than this controller decodes (:mod:`extension.runtime.jsondecode`) never stops the
others: a List answers without it, a GET or a write raises :class:`Undecodable`, a watch event
(:meth:`Kube.watch_event`) says so; each time the object is named in a log line and in a Kubernetes Event on it,
once per resourceVersion.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from extension.constants import FIELD_MANAGER, UNDECODABLE_EVENT_REASON
from extension.runtime import jsondecode, metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        group_path = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        parts = [group_path]
        if self.namespaced and namespace:
            parts.append(f"/namespaces/{quote(namespace, safe='')}")
        parts.append(f"/{self.plural}")
        if name:
            parts.append(f"/{quote(name, safe='')}")
        if subresource:
            parts.append(f"/{subresource}")
        return "".join(parts)


KINDS = {k.kind: k for k in [
    Kind("v1", "Namespace", "namespaces", namespaced=False),
    Kind("v1", "Secret", "secrets"),
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Event", "events"),
    Kind("v1", "Service", "services"),
    Kind("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    Kind("v1", "Pod", "pods"),
    Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    Kind("autoscaling.k8s.io/v1", "VerticalPodAutoscaler", "verticalpodautoscalers"),
    Kind("extensions.gardener.cloud/v1alpha1", "Extension", "extensions"),
    Kind("extensions.gardener.cloud/v1alpha1", "Cluster", "clusters", namespaced=False),
    Kind("core.gardener.cloud/v1beta1", "Shoot", "shoots"),
    Kind("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations",
         namespaced=False),
    Kind("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations",
         namespaced=False),
    Kind("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies",
         namespaced=False),
    Kind("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings",
         namespaced=False),
    Kind("extensions.gardener.cloud/v1alpha1", "OperatingSystemConfig", "operatingsystemconfigs"),
    Kind("coordination.k8s.io/v1", "Lease", "leases"),
    Kind("discovery.k8s.io/v1", "EndpointSlice", "endpointslices"),
    Kind("monitoring.coreos.com/v1", "PrometheusRule", "prometheusrules"),
    Kind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
    Kind("monitoring.coreos.com/v1alpha1", "ScrapeConfig", "scrapeconfigs"),
]}


class ApiError(Exception):
    """A request the API server refused; ``status`` is the HTTP status, ``reason`` Kubernetes' reason."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        self.method, self.path, self.status = method, path, status
        self.reason = body.get("reason", "") if isinstance(body, dict) else ""
        self.message = body.get("message", "") if isinstance(body, dict) else str(body)[:500]
        super().__init__(f"{method} {path}: {status} {self.reason}: {self.message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    def describe(self) -> str:
        return f"the API server refused {self.method} {self.path}: {self.status} {self.reason}: {self.message}"


class Undecodable(ApiError):
    """The answer is an object nested deeper than this controller decodes (:data:`jsondecode.MAX_DEPTH`): it is
    skipped (and was named in a log line and an Event). Not a refusal and not worth a quick retry: it stays so
    until the object changes. Status 0."""

    def __init__(self, method: str, path: str, skeleton: Any):
        self.skeleton = skeleton
        super().__init__(method, path, 0, {"reason": "Undecodable", "message": (
            f"the object nests deeper than {jsondecode.MAX_DEPTH} levels; this controller does not decode it")})

    def describe(self) -> str:
        return f"{self.method} {self.path}: {self.message}"


class TransportError(ApiError):
    """The API server could not be reached (a refused connection, a timeout, a broken TLS connection): not a
    refusal, an infrastructure problem that is retried. Status 0."""

    def __init__(self, method: str, path: str, cause: str):
        super().__init__(method, path, 0, {"reason": "Unreachable", "message": cause[:300]})

    def describe(self) -> str:
        return f"the API server could not be reached for {self.method} {self.path}: {self.message}"


def _cause(exc: BaseException) -> str:
    """What went wrong on the way, without urllib3's object addresses."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    if "object at 0x" in text and ">: " in text:  # NewConnectionError('<...HTTPSConnection object at 0x..>: ...')
        text = text.split(">: ", 1)[1].rstrip("')\"")
    return f"{type(reason).__name__}: {text}"


# Accept headers of metadata-only reads (what controller-runtime's metadata informers ask for): the API server
# answers with PartialObjectMetadata, the object's metadata alone
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
POOL_SIZE = 32  # connections kept per API server: the workers, the webhooks' reviews and the watches at once
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DROPPED = "\x00dropped"  # (in a page from request: the items left out, for pages())


class NotLeader(ApiError):
    """A write refused before it was sent: this process no longer holds the leader lease."""

    def __init__(self, method: str, path: str):
        super().__init__(method, path, 0, {"reason": "NotLeader",
                                           "message": "this replica is no longer the leader; the write was not sent"})


def api_client(config_file: str | None = None, context: str | None = None, *, persist_config: bool = True,
               pool_size: int = POOL_SIZE) -> k8s_client.ApiClient:
    """An ApiClient for a kubeconfig file; without one the Pod's service account, else the default kubeconfig.
    Its ``connection_pool_maxsize`` (the client's default: 5 per CPU) is ``pool_size`` connections per host: beyond
    that urllib3 would open and drop a connection (a TLS handshake) per request."""
    configuration = k8s_client.Configuration()
    loaded = False
    if config_file is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            loaded = True
        except k8s_config.ConfigException:
            pass
    if not loaded:
        k8s_config.load_kube_config(config_file=config_file, context=context, client_configuration=configuration,
                                    persist_config=persist_config)
    configuration.connection_pool_maxsize = pool_size
    return k8s_client.ApiClient(configuration)


class Kube:
    """One API server. Thread-safe for concurrent use (the ApiClient's pool is)."""

    def __init__(self, api_client: k8s_client.ApiClient, field_manager: str = FIELD_MANAGER,
                 fence: Callable[[], bool] | None = None, metrics_host: str | None = None):
        self.api = api_client
        self.field_manager = field_manager
        # the host label of rest_client_*: the API server's host:port, unless one value stands for many servers
        self.metrics_host = metrics_host or urlsplit(str(api_client.configuration.host)).netloc or "none"
        self.calls: Counter[str] = Counter()
        self.fence = fence  # when set and it returns False, writes are refused (NotLeader) without being sent
        self._lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()  # (uid, resourceVersion) of undecodable objects named

    def fenced(self, fence: Callable[[], bool]) -> Kube:
        """The same API server and connections, with writes only while ``fence()`` holds."""
        return self._like(self.field_manager, fence)

    def with_field_manager(self, field_manager: str) -> Kube:
        """The same API server, connections and fence, applying as ``field_manager``."""
        return self._like(field_manager, self.fence)

    def _like(self, field_manager: str, fence: Callable[[], bool] | None) -> Kube:
        other = Kube(self.api, field_manager, fence, self.metrics_host)
        other.calls = self.calls  # one count per API server
        other._lock = self._lock
        other._reported = self._reported
        return other

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None, **kw: Any) -> Kube:
        """A client for a kubeconfig file; without one the Pod's service account, else the default kubeconfig
        (:func:`api_client`: :data:`POOL_SIZE` connections)."""
        return cls(api_client(path, context), **kw)

    # --- the one place requests are made -------------------------------------------------------------
    def _count(self, verb: str) -> None:
        with self._lock:
            self.calls[verb] += 1
        metrics.API_REQUESTS.labels(verb).inc()

    def _measured(self, method: str, code: str, started: float) -> None:
        """client-go's metrics of one request: its result (``code`` the HTTP status, ``<error>`` without an
        answer) and its latency."""
        metrics.REST_REQUESTS.labels(code, method, self.metrics_host).inc()
        metrics.REST_LATENCY.labels(method, self.metrics_host).observe(time.monotonic() - started)

    def request(self, method: str, path: str, body: Any = None, query: Iterable[tuple[str, str]] = (),
                content_type: str = "application/json", timeout: float = 30, verb: str | None = None,
                accept: str = "application/json", kind: Kind | None = None, answer: bool = True,
                text: bool = False) -> Any:
        """One request; the decoded answer (``answer=False``: None, not read; ``text``: the answer as text, not
        decoded). ``kind``: what the answer holds (named when it cannot be decoded); with ``verb="LIST"`` the answer
        is a List, whose items nested too deep are left out."""
        if method in WRITE_VERBS and self.fence is not None and not self.fence():
            raise NotLeader(method, path)
        headers = {"Accept": accept, "Content-Type": content_type}
        method_, url, headers_, _, post = self.api.param_serialize(
            method=method, resource_path=path, query_params=list(query), header_params=headers, body=None,
            auth_settings=["BearerToken"])
        self._count(verb or method)
        started, code = time.monotonic(), "<error>"
        try:
            response = self.api.call_api(method_, url, header_params=headers_, body=body, post_params=post,
                                         _request_timeout=timeout)
            code = str(response.status)
            response.read()
        except k8s_client.exceptions.ApiException as exc:
            if not exc.status:  # the client's wrapping of a failure on the way
                raise TransportError(method, path, str(exc.reason or exc)) from None
            code = str(exc.status)
            raise ApiError(method, path, exc.status, _json(exc.body)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # MaxRetryError, ProtocolError, refused, timeout
            raise TransportError(method, path, _cause(exc)) from None
        finally:
            self._measured(method_, code, started)
        if response.status >= 400:
            raise ApiError(method, path, response.status, _json(response.data))
        if not answer:
            return None
        if text:
            return _text(response.data) or ""
        return self._decode(method, path, response.data, verb == "LIST", kind)

    def _decode(self, method: str, path: str, raw: Any, listing: bool, kind: Kind | None) -> Any:
        if raw is None or raw == b"" or raw == "":
            return {}
        try:
            if listing:
                data, dropped = jsondecode.decode_list(raw)
                for item in dropped:
                    self.undecodable(item, kind)
                if dropped:
                    data[_DROPPED] = dropped
                return data
            data, deep = jsondecode.decode_object(raw)
        except jsondecode.TooDeep as exc:
            data, deep = exc.skeleton, True
        except ValueError:
            return _text(raw)
        if deep:
            self.undecodable(data if isinstance(data, dict) else {}, kind)
            raise Undecodable(method, path, data)
        return data

    def watch_event(self, line: bytes, kind: str) -> tuple[dict[str, Any], bool]:
        """One line of a watch stream: the event, and whether its object nests too deep to be decoded (then the
        object is a skeleton, its metadata kept: it was named in a log line and an Event)."""
        event, deep = jsondecode.decode_event(line)
        if not isinstance(event, dict):
            raise ValueError(f"a watch event that is not an object: {str(event)[:100]}")
        if deep and event.get("type") != "DELETED":  # (gone: nothing to skip, nowhere to put an Event)
            obj = event.get("object")
            self.undecodable(obj if isinstance(obj, dict) else {}, KINDS[kind])
        return event, deep

    def undecodable(self, skeleton: dict[str, Any], kind: Kind | None) -> None:
        """Say that an object is skipped because it nests too deep: a log line and a Warning Event on it (once
        per resourceVersion and process; the Event's name is derived from them, so a second replica or a
        restart adds none). Never raises."""
        meta = skeleton.get("metadata")
        if not isinstance(meta, dict):
            meta = {}
        api_version = kind.api_version if kind else str(skeleton.get("apiVersion") or "")
        kind_name = kind.kind if kind else str(skeleton.get("kind") or "object")
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        uid, version = str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")
        with self._lock:
            if (uid, version) in self._reported:
                return
            if len(self._reported) > 10000:  # bounded: at worst a name is said once more
                self._reported.clear()
            self._reported.add((uid, version))
        what = f"{kind_name} {namespace + '/' if namespace else ''}{name}"
        log.error("%s (uid %s, resourceVersion %s) is skipped: its JSON nests deeper than %d levels, more than "
                  "this controller decodes; the other objects go on. Change it to nest less deeply.", what,
                  uid or "?", version or "?", jsondecode.MAX_DEPTH)
        if not name or not api_version:
            return
        digest = hashlib.sha256(f"{UNDECODABLE_EVENT_REASON}/{uid}/{version}".encode()).hexdigest()[:16]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name[:200]}.{digest}", "namespace": namespace or "default"},
            "involvedObject": {"apiVersion": api_version, "kind": kind_name, "name": name,
                               **({"namespace": namespace} if namespace else {}),
                               **({"uid": uid} if uid else {}), **({"resourceVersion": version} if version else {})},
            "reason": UNDECODABLE_EVENT_REASON, "type": "Warning",
            "message": (f"registry-cache skips this {kind_name}: its JSON nests deeper than {jsondecode.MAX_DEPTH} "
                        "levels, more than the controller decodes. The other objects are not affected; change "
                        "this one to nest less deeply."),
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        try:
            self.create(event)
        except ApiError as exc:
            if not exc.conflict:  # (conflict: already said, by another replica or before a restart)
                log.warning("could not record an Event on %s: %s", what, exc.describe())

    # --- verbs ---------------------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str | None = None,
            metadata_only: bool = False) -> dict[str, Any] | None:
        """The object (``metadata_only``: its PartialObjectMetadata), None when there is none; :class:`Undecodable`
        when it nests too deep."""
        try:
            return self.request("GET", KINDS[kind].path(namespace, name),
                                accept=METADATA if metadata_only else "application/json", kind=KINDS[kind])
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None,
             metadata_only: bool = False) -> list[dict[str, Any]]:
        """Every object (or with ``metadata_only`` only their metadata: PartialObjectMetadata), in pages of 500;
        without the objects nested too deep to decode (each named in a log line and an Event)."""
        return self.list_pages(kind, namespace, label_selector, metadata_only)[0]

    def list_pages(self, kind: str, namespace: str | None = None, label_selector: str | None = None,
                   metadata_only: bool = False, limit: int = 500) -> tuple[builtins.list[dict[str, Any]], str]:
        """Every object in pages of ``limit`` (one snapshot), and the resourceVersion to watch from."""
        items: builtins.list[dict[str, Any]] = []
        version = ""
        for page, page_version in self.pages(kind, namespace, label_selector, metadata_only, limit):
            items.extend(page)
            version = page_version
        return items, version

    def pages(self, kind: str, namespace: str | None = None, label_selector: str | None = None,
              metadata_only: bool = False, limit: int = 500,
              skipped: builtins.list[dict[str, Any]] | None = None, *, field_selector: str | None = None,
              ) -> Iterator[tuple[builtins.list[dict[str, Any]], str]]:
        """The pages of a LIST (one snapshot), each with the list's resourceVersion: a caller that keeps only
        what it needs of each page never holds more than one page. The items nested too deep to decode are left
        out (and named in a log line and an Event); ``skipped`` gets their skeletons (metadata kept).
        ``field_selector`` ``metadata.name=<name>`` lists one object by name (what RBAC ``resourceNames`` allow to
        list and watch)."""
        query = [("labelSelector", label_selector)] if label_selector else []
        query += [("fieldSelector", field_selector)] if field_selector else []
        accept = METADATA_LIST if metadata_only else "application/json"
        api_version, k = KINDS[kind].api_version, KINDS[kind].kind
        token = ""
        while True:
            page = self.request("GET", KINDS[kind].path(namespace), verb="LIST", accept=accept, kind=KINDS[kind],
                                query=query + [("limit", str(limit))] + ([("continue", token)] if token else []))
            dropped = page.pop(_DROPPED, [])
            if skipped is not None:
                skipped.extend(dropped)
            meta = page.get("metadata") or {}
            items = page.get("items") or []
            del page
            for item in items:  # list items come without apiVersion/kind
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", k)
            token = meta.get("continue") or ""
            yield items, str(meta.get("resourceVersion") or "")
            if not token:
                return

    def watch(self, kind: str, resource_version: str, namespace: str | None = None,
              label_selector: str | None = None, metadata_only: bool = False,
              timeout_seconds: int = 300, *, field_selector: str | None = None) -> urllib3.BaseHTTPResponse:
        """A watch stream from ``resource_version`` (newline-delimited JSON events, bookmarks included); the
        caller reads and closes it. The server ends it after ``timeout_seconds``."""
        path = KINDS[kind].path(namespace)
        query = [("watch", "1"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(timeout_seconds))]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        _, url, headers, _, _ = self.api.param_serialize(
            method="GET", resource_path=path, query_params=query,
            header_params={"Accept": METADATA if metadata_only else "application/json"}, body=None,
            auth_settings=["BearerToken"])
        self._count("WATCH")
        started, code = time.monotonic(), "<error>"
        try:  # the client reads no answer itself: its RESTResponse holds the stream, not read yet
            response = self.api.call_api("GET", url, header_params=headers,
                                         _request_timeout=(10, timeout_seconds + 30)).response
            code = str(response.status)
        except k8s_client.exceptions.ApiException as exc:  # the client's wrapping of a failure on the way
            raise TransportError("WATCH", path, str(exc.reason or exc)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransportError("WATCH", path, _cause(exc)) from None
        finally:  # (the latency of a watch: until the stream is open)
            self._measured("GET", code, started)
        if response.status >= 400:
            data = _json(response.data)
            response.release_conn()
            raise ApiError("WATCH", path, response.status, data)
        return response

    def pod_log(self, namespace: str, name: str, container: str, tail_lines: int | None = None,
                limit_bytes: int | None = None) -> str:
        """The log of a Pod's container as the kubelet keeps it (``pods/log``): its last ``tail_lines`` lines, at
        most ``limit_bytes`` of them."""
        query = [("container", container)]
        if tail_lines is not None:
            query.append(("tailLines", str(tail_lines)))
        if limit_bytes is not None:
            query.append(("limitBytes", str(limit_bytes)))
        # (kube-apiserver negotiates the log as its other answers: Accept text/plain alone is 406 Not Acceptable;
        # kubectl sends */* too)
        return self.request("GET", KINDS["Pod"].path(namespace, name, "log"), query=query,
                            accept="text/plain, */*", text=True)

    def apply(self, obj: dict[str, Any], force: bool = True, subresource: str | None = None) -> dict[str, Any]:
        """Server-side apply with this client's field manager."""
        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        query = [("fieldManager", self.field_manager)] + ([("force", "true")] if force else [])
        return self.request("PATCH", kind.path(meta.get("namespace"), meta["name"], subresource), body=obj,
                            query=query, content_type="application/apply-patch+yaml", kind=kind)

    def patch(self, kind: str, name: str, patch: dict[str, Any] | builtins.list[dict[str, Any]],
              namespace: str | None = None, subresource: str | None = None, merge: bool = True) -> dict[str, Any]:
        content_type = "application/merge-patch+json" if merge else "application/json-patch+json"
        return self.request("PATCH", KINDS[kind].path(namespace, name, subresource), body=patch,
                            content_type=content_type, kind=KINDS[kind])

    def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT: the whole object, refused (409) when ``metadata.resourceVersion`` is no longer current."""
        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        return self.request("PUT", kind.path(meta.get("namespace"), meta["name"]), body=obj, kind=kind)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = KINDS[obj["kind"]]
        return self.request("POST", kind.path(obj["metadata"].get("namespace")), body=obj, kind=kind)

    def delete(self, kind: str, name: str, namespace: str | None = None,
               propagation: str = "Background", uid: str | None = None) -> bool:
        """Delete (only the object of ``uid``, if given: else 409); False when it was already gone."""
        options: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", KINDS[kind].path(namespace, name), answer=False, body=options)
            return True
        except ApiError as exc:
            if exc.not_found:
                return False
            raise

    def has_kind(self, kind: str) -> bool:
        """Whether the API server serves ``kind`` (the VPA or Prometheus Operator CRDs may be missing): its group
        version's discovery document lists it (readable by every authenticated client)."""
        k = KINDS[kind]
        group_path = f"/api/{k.api_version}" if "/" not in k.api_version else f"/apis/{k.api_version}"
        try:
            resources = self.request("GET", group_path).get("resources") or []
        except ApiError as exc:
            if exc.not_found:
                return False
            raise
        return any(r.get("name") == k.plural for r in resources if isinstance(r, dict))


def _text(raw: Any) -> Any:
    return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw


def _json(raw: Any) -> Any:
    """An error's body: its Status (cut where it nests too deep), else its text."""
    if raw is None or raw == b"" or raw == "":
        return {}
    try:
        return jsondecode.loads(raw, jsondecode.MAX_DEPTH)[0]
    except ValueError:
        return _text(raw)
