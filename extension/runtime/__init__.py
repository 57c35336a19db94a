"""The runtime layer, as controller-runtime (and client-go beneath it) is for a Go controller: what every part of
the process uses to talk to the API servers and to schedule work, and nothing about registry caches.

- :mod:`.kube`: the one small client (one request per call, JSON, server-side apply, watch streams; writes
  fenced by the leader lease), with :mod:`.jsondecode` (objects nested too deep are skipped and named);
- :mod:`.informer`: list + watch of one kind, a small record per object;
- :mod:`.workqueue`: client-go's work queue (a key once, one worker per key);
- :mod:`.leader`: leader election with a Lease, as client-go's;
- :mod:`.retry`: the backoff of failed operations;
- :mod:`.metrics`: the metrics of the above, under the names controller-runtime and client-go give them.

It imports nothing of ``extension/`` but :mod:`extension.constants` (a unit test keeps it so).
"""
