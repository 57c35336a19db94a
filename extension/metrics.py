"""The controller's own Prometheus metrics (``run --metrics-address``), those of the product: what has no
equivalent in controller-runtime. The runtime layer's (the REST client, the work queue, the reconciles, leader
election, the informers) are in :mod:`extension.runtime.metrics`, under controller-runtime's names.

- ``registry_cache_operations_total{operation, result}``: Extension operations of Gardener's contract (Create,
  Reconcile, Delete, Migrate, Restore) by result (Succeeded, Error); ``controller_runtime_reconcile_total`` counts
  every key a worker processed, these only what was carried out;
- ``registry_cache_operation_duration_seconds{operation}``: how long they took;
- ``registry_cache_webhook_refusals_total{webhook}``: admission requests refused;
- ``registry_cache_checks_total{result}``: Extensions looked at without an operation asked for (the periodic
  resync, a delivered object or an input that changed): ``in-sync`` (nothing written) or ``reconciled``;
- ``registry_cache_health_condition_writes_total``: conditions ``SystemComponentsHealthy`` written (a write
  happens only when the caches' state changed; its PATCH is also in ``rest_client_requests_total``);
- ``registry_cache_extension_error{namespace, name, type}``: 1 while the last operation of an Extension ended
  in Error, 0 once one succeeded (the alert ``RegistryCacheExtensionError`` fires after 15 minutes of 1);
- ``registry_cache_upstream_credentials_valid{namespace, upstream}``: 1 when the upstream accepted a cache's
  credentials at the last check, 0 when it refused them; no sample while nothing is known (unreachable);
- ``registry_cache_upstream_reachable{namespace, upstream}``: 1 when the last check got a registry's answer.
``namespace`` is the seed namespace of the Extension (the shoot): many shoots cache the same upstream.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

OPERATIONS = Counter("registry_cache_operations", "Extension operations by result", ["operation", "result"])
OPERATION_SECONDS = Histogram("registry_cache_operation_duration_seconds", "Duration of Extension operations",
                              ["operation"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
WEBHOOK_REFUSALS = Counter("registry_cache_webhook_refusals", "Admission requests refused", ["webhook"])
CHECKS = Counter("registry_cache_checks", "Extensions checked without an operation asked for", ["result"])
HEALTH_WRITES = Counter("registry_cache_health_condition_writes", "SystemComponentsHealthy conditions written")
EXTENSION_ERROR = Gauge("registry_cache_extension_error",
                        "1 while the last operation of the Extension ended in Error, else 0",
                        ["namespace", "name", "type"])
UPSTREAM_CREDENTIALS_VALID = Gauge("registry_cache_upstream_credentials_valid",
                                   "Whether the upstream accepted the cache's credentials at the last check",
                                   ["namespace", "upstream"])
UPSTREAM_REACHABLE = Gauge("registry_cache_upstream_reachable",
                           "Whether the last credentials check got an answer from the upstream",
                           ["namespace", "upstream"])
_types: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def extension_state(namespace: str, name: str, extension_type: str, error: bool) -> None:
    """Record whether the last operation of an Extension ended in Error."""
    with _lock:
        _types[(namespace, name)] = extension_type
        EXTENSION_ERROR.labels(namespace, name, extension_type).set(1 if error else 0)


def forget_extension(namespace: str, name: str) -> None:
    """The Extension is gone: drop its series."""
    with _lock:
        extension_type = _types.pop((namespace, name), None)
        if extension_type is not None:
            EXTENSION_ERROR.remove(namespace, name, extension_type)
