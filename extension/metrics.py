"""The controller's own Prometheus metrics (``run --metrics-address``).

- ``registry_cache_operations_total{operation, result}``: Extension operations (Create, Reconcile, Delete,
  Migrate, Restore) by result (Succeeded, Error);
- ``registry_cache_operation_duration_seconds{operation}``: how long they took;
- ``registry_cache_api_requests_total{verb}``: requests to the API servers (seed and shoots) by verb (GET, LIST,
  WATCH, PATCH, PUT, POST, DELETE);
- ``registry_cache_webhook_refusals_total{webhook}``: admission requests refused;
- ``registry_cache_informer_objects{informer}`` and ``registry_cache_informer_synced{informer}``: what each watch
  keeps in memory, and whether it has listed once (after a start or a takeover: all synced = all seen);
- ``registry_cache_checks_total{result}``: Extensions looked at without an operation asked for (the periodic
  resync, a delivered object or an input that changed): ``in-sync`` (nothing written) or ``reconciled``;
- ``registry_cache_queue_depth``: Extensions waiting for a worker;
- ``registry_cache_leader``: 1 while this replica holds the leader lease (or runs without leader election).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

OPERATIONS = Counter("registry_cache_operations", "Extension operations by result", ["operation", "result"])
OPERATION_SECONDS = Histogram("registry_cache_operation_duration_seconds", "Duration of Extension operations",
                              ["operation"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
API_REQUESTS = Counter("registry_cache_api_requests", "Requests to the Kubernetes API servers", ["verb"])
WEBHOOK_REFUSALS = Counter("registry_cache_webhook_refusals", "Admission requests refused", ["webhook"])
INFORMER_OBJECTS = Gauge("registry_cache_informer_objects", "Objects an informer keeps", ["informer"])
INFORMER_SYNCED = Gauge("registry_cache_informer_synced", "Whether an informer has listed once", ["informer"])
CHECKS = Counter("registry_cache_checks", "Extensions checked without an operation asked for", ["result"])
QUEUE_DEPTH = Gauge("registry_cache_queue_depth", "Extensions waiting for a worker")
LEADER = Gauge("registry_cache_leader", "1 while this replica reconciles (holds the leader lease)")


def serve(address: str) -> None:
    """Serve /metrics on ``host:port`` in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
