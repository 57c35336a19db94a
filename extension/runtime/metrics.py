"""The runtime layer's Prometheus metrics, under the names, labels and buckets controller-runtime and client-go give
them, so that the dashboards and alerts written for any controller-runtime manager read this controller too.

- client-go's REST client (``k8s.io/component-base/metrics/prometheus/restclient``):
  ``rest_client_requests_total{code, method, host}`` (``code`` the HTTP status, ``<error>`` when no answer came;
  ``method`` the HTTP method: a LIST and a WATCH are GETs, as client-go counts them) and
  ``rest_client_request_duration_seconds{verb, host}`` (until the whole answer is read; for a watch until the
  stream is open). ``host`` is the API server's ``host:port``; the clients of the shoots under Gardener (one
  API server per shoot, :mod:`extension.controller.shoots`) all count as ``host="shoots"``: a label value per
  Extension is not allowed here (1,000 Extensions, 1,000 series per bucket);
- client-go's work queue (controller-runtime's ``pkg/metrics/workqueue.go``), labels ``name`` and
  ``controller`` (both the queue's name): ``workqueue_depth``, ``workqueue_adds_total``,
  ``workqueue_queue_duration_seconds``, ``workqueue_work_duration_seconds``, ``workqueue_retries_total``,
  ``workqueue_unfinished_work_seconds``, ``workqueue_longest_running_processor_seconds``;
- controller-runtime's controller (``pkg/internal/controller/metrics``), label ``controller``:
  ``controller_runtime_reconcile_total{controller, result}`` (``success``, ``error``),
  ``controller_runtime_reconcile_errors_total``, ``controller_runtime_reconcile_time_seconds``,
  ``controller_runtime_max_concurrent_reconciles``, ``controller_runtime_active_workers``;
- client-go's leader election: ``leader_election_master_status{name}`` (the Lease's name), 1 on the leader, 0
  on a replica waiting for the Lease;
- without an equivalent there: ``registry_cache_informer_objects{informer}`` and
  ``registry_cache_informer_synced{informer}`` (0 from the informer's start until its first list is in, then 1:
  all synced after a start or a takeover = everything seen; client-go's reflector metrics are gone), and
  ``registry_cache_api_requests_total{verb}``, the requests by Kubernetes verb (GET, LIST, WATCH, PATCH, PUT,
  POST, DELETE), which client-go's count by HTTP method cannot tell apart (hack/bench.py reports them).

Kept for one release under their old names, then removed (docs/usage/monitoring.md says so):
``registry_cache_queue_depth`` (``workqueue_depth``) and ``registry_cache_leader``
(``leader_election_master_status``).

prometheus_client's ``*_created`` series are off (client_golang has none): a counter is one series per label set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics, start_http_server

disable_created_metrics()

SHOOTS_HOST = "shoots"  # the host label of the clients of the shoots' API servers under Gardener

# --- client-go's REST client ---------------------------------------------------------------------------------
REST_REQUESTS = Counter("rest_client_requests",
                        "Number of HTTP requests, partitioned by status code, method, and host.",
                        ["code", "method", "host"])
REST_LATENCY = Histogram("rest_client_request_duration_seconds",
                         "Request latency in seconds. Broken down by verb, and host.", ["verb", "host"],
                         buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0))

# --- client-go's work queue, as controller-runtime registers it --------------------------------------------------
_QUEUE = ["name", "controller"]
_QUEUE_BUCKETS = tuple(10e-9 * 10 ** i for i in range(12))  # prometheus.ExponentialBuckets(10e-9, 10, 12)
WORKQUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue", _QUEUE)
WORKQUEUE_ADDS = Counter("workqueue_adds", "Total number of adds handled by workqueue", _QUEUE)
WORKQUEUE_QUEUE_DURATION = Histogram("workqueue_queue_duration_seconds",
                                     "How long in seconds an item stays in workqueue before being requested",
                                     _QUEUE, buckets=_QUEUE_BUCKETS)
WORKQUEUE_WORK_DURATION = Histogram("workqueue_work_duration_seconds",
                                    "How long in seconds processing an item from workqueue takes.",
                                    _QUEUE, buckets=_QUEUE_BUCKETS)
WORKQUEUE_UNFINISHED = Gauge("workqueue_unfinished_work_seconds",
                             "How many seconds of work has been done that is in progress and hasn't been observed by "
                             "work_duration. Large values indicate stuck threads. One can deduce the number of stuck "
                             "threads by observing the rate at which this increases.", _QUEUE)
WORKQUEUE_LONGEST = Gauge("workqueue_longest_running_processor_seconds",
                          "How many seconds has the longest running processor for workqueue been running.", _QUEUE)
WORKQUEUE_RETRIES = Counter("workqueue_retries", "Total number of retries handled by workqueue", _QUEUE)

# --- controller-runtime's controller -----------------------------------------------------------------------------
RECONCILE_TOTAL = Counter("controller_runtime_reconcile", "Total number of reconciliations per controller",
                          ["controller", "result"])
RECONCILE_ERRORS = Counter("controller_runtime_reconcile_errors",
                           "Total number of reconciliation errors per controller", ["controller"])
RECONCILE_TIME = Histogram("controller_runtime_reconcile_time_seconds",
                           "Length of time per reconciliation per controller", ["controller"],
                           buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7,
                                    0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15,
                                    20, 25, 30, 40, 50, 60))
MAX_CONCURRENT_RECONCILES = Gauge("controller_runtime_max_concurrent_reconciles",
                                  "Maximum number of concurrent reconciles per controller", ["controller"])
ACTIVE_WORKERS = Gauge("controller_runtime_active_workers", "Number of currently used workers per controller",
                       ["controller"])

# --- client-go's leader election -------------------------------------------------------------------------------
LEADER = Gauge("leader_election_master_status",
               "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates "
               "master. 'name' is the string used to identify the lease. Please make sure to group by name.", ["name"])

# --- no equivalent in controller-runtime: the informers, the requests by Kubernetes verb ----------------------
INFORMER_OBJECTS = Gauge("registry_cache_informer_objects", "Objects an informer keeps", ["informer"])
INFORMER_SYNCED = Gauge("registry_cache_informer_synced", "Whether an informer has listed once since it started",
                        ["informer"])

API_REQUESTS = Counter("registry_cache_api_requests", "Requests to the Kubernetes API servers by Kubernetes verb",
                       ["verb"])

# --- the old names, for one release ------------------------------------------------------------------------------
DEPRECATED_QUEUE_DEPTH = Gauge("registry_cache_queue_depth", "Deprecated, use workqueue_depth: Extensions waiting "
                               "for a worker")
DEPRECATED_LEADER = Gauge("registry_cache_leader", "Deprecated, use leader_election_master_status: 1 while this "
                          "replica reconciles (holds the leader lease)")


def leading(name: str, leader: bool) -> None:
    """This replica holds the Lease ``name`` (or, without leader election, reconciles), or waits for it."""
    LEADER.labels(name).set(1 if leader else 0)
    DEPRECATED_LEADER.set(1 if leader else 0)


def reconciled(controller: str, ok: bool, seconds: float) -> None:
    """One reconcile (one key taken from the queue and processed) of ``controller``."""
    RECONCILE_TOTAL.labels(controller, "success" if ok else "error").inc()
    if not ok:
        RECONCILE_ERRORS.labels(controller).inc()
    RECONCILE_TIME.labels(controller).observe(seconds)


def serve(address: str) -> None:
    """Serve /metrics (every metric of the process) on ``host:port`` in a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
