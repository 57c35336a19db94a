"""The controller's own Prometheus metrics (``run --metrics-address``).

- ``registry_cache_operations_total{operation, result}``: Extension operations (Create, Reconcile, Delete,
  Migrate, Restore) by result (Succeeded, Error);
- ``registry_cache_operation_duration_seconds{operation}``: how long they took;
- ``registry_cache_api_requests_total{verb}``: requests to the API servers (seed and shoots);
- ``registry_cache_webhook_refusals_total{webhook}``: admission requests refused;
- ``registry_cache_upstream_credentials_valid{namespace, upstream}``: 1 when the upstream accepted a cache's
  credentials at the last check, 0 when it refused them; no sample while nothing is known (unreachable);
- ``registry_cache_upstream_reachable{namespace, upstream}``: 1 when the last check got a registry's answer.
``namespace`` is the seed namespace of the Extension (the shoot): many shoots cache the same upstream.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

OPERATIONS = Counter("registry_cache_operations", "Extension operations by result", ["operation", "result"])
OPERATION_SECONDS = Histogram("registry_cache_operation_duration_seconds", "Duration of Extension operations",
                              ["operation"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
API_REQUESTS = Counter("registry_cache_api_requests", "Requests to the Kubernetes API servers", ["verb"])
WEBHOOK_REFUSALS = Counter("registry_cache_webhook_refusals", "Admission requests refused", ["webhook"])
UPSTREAM_CREDENTIALS_VALID = Gauge("registry_cache_upstream_credentials_valid",
                                   "Whether the upstream accepted the cache's credentials at the last check",
                                   ["namespace", "upstream"])
UPSTREAM_REACHABLE = Gauge("registry_cache_upstream_reachable",
                           "Whether the last credentials check got an answer from the upstream",
                           ["namespace", "upstream"])


def serve(address: str) -> None:
    """Serve /metrics on ``host:port`` in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
