"""A small, explicit Kubernetes client for the few kinds this extension touches.

Server-side apply, get, list, patch and delete as plain JSON over the ``kubernetes`` package's ApiClient
(its authentication, TLS and kubeconfig handling), with no discovery round trips: every call is one request,
which keeps the calls of a reconcile few and countable (:attr:`Kube.calls`).
"""

from __future__ import annotations

import builtins
import json
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from extension import metrics
from extension.constants import FIELD_MANAGER


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
    Kind("extensions.gardener.cloud/v1alpha1", "OperatingSystemConfig", "operatingsystemconfigs"),
    Kind("authorization.k8s.io/v1", "SubjectAccessReview", "subjectaccessreviews", namespaced=False),
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


class Kube:
    """One API server. Thread-safe for concurrent use (the ApiClient's pool is)."""

    def __init__(self, api_client: k8s_client.ApiClient, field_manager: str = FIELD_MANAGER):
        self.api = api_client
        self.field_manager = field_manager
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None, **kw: Any) -> Kube:
        if path is None:
            try:
                k8s_config.load_incluster_config()
                return cls(k8s_client.ApiClient(), **kw)
            except k8s_config.ConfigException:
                pass
        return cls(k8s_config.new_client_from_config(config_file=path, context=context), **kw)

    # --- the one place requests are made -------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, query: Iterable[tuple[str, str]] = (),
                content_type: str = "application/json", timeout: float = 30) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method_, url, headers_, _, post = self.api.param_serialize(
            method=method, resource_path=path, query_params=list(query), header_params=headers, body=None,
            auth_settings=["BearerToken"])
        with self._lock:
            self.calls[method] += 1
        metrics.API_REQUESTS.labels(method).inc()
        try:
            response = self.api.call_api(method_, url, header_params=headers_, body=body, post_params=post,
                                         _request_timeout=timeout)
            response.read()
        except k8s_client.exceptions.ApiException as exc:
            if not exc.status:  # the client's wrapping of a failure on the way
                raise TransportError(method, path, str(exc.reason or exc)) from None
            raise ApiError(method, path, exc.status, _json(exc.body)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # MaxRetryError, ProtocolError, refused, timeout
            raise TransportError(method, path, _cause(exc)) from None
        data = _json(response.data)
        if response.status >= 400:
            raise ApiError(method, path, response.status, data)
        return data

    # --- verbs ---------------------------------------------------------------------------------------
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.request("GET", KINDS[kind].path(namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        items = self.request("GET", KINDS[kind].path(namespace), query=query).get("items", [])
        api_version, k = KINDS[kind].api_version, KINDS[kind].kind
        for item in items:  # list items come without apiVersion/kind
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", k)
        return items

    def apply(self, obj: dict[str, Any], force: bool = True, subresource: str | None = None) -> dict[str, Any]:
        """Server-side apply with this client's field manager."""
        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        query = [("fieldManager", self.field_manager)] + ([("force", "true")] if force else [])
        return self.request("PATCH", kind.path(meta.get("namespace"), meta["name"], subresource), body=obj,
                            query=query, content_type="application/apply-patch+yaml")

    def patch(self, kind: str, name: str, patch: dict[str, Any] | builtins.list[dict[str, Any]],
              namespace: str | None = None, subresource: str | None = None, merge: bool = True) -> dict[str, Any]:
        content_type = "application/merge-patch+json" if merge else "application/json-patch+json"
        return self.request("PATCH", KINDS[kind].path(namespace, name, subresource), body=patch,
                            content_type=content_type)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = KINDS[obj["kind"]]
        return self.request("POST", kind.path(obj["metadata"].get("namespace")), body=obj)

    def delete(self, kind: str, name: str, namespace: str | None = None,
               propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        try:
            self.request("DELETE", KINDS[kind].path(namespace, name),
                         body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation})
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


def _json(raw: Any) -> Any:
    if raw is None or raw == b"" or raw == "":
        return {}
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    try:
        return json.loads(raw)
    except ValueError:
        return raw
