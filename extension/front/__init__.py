"""The coalescing front of a cache Pod: one upstream fetch per blob, whatever the number of concurrent pullers.

distribution 3.1 in proxy mode fetches a blob from its upstream once per concurrent puller (its ``inflight``
map only decides which request stores the blob; the others copy it from the upstream again). The front
listens where the cache is reached (port 5000, TLS with the controller's certificate), passes every request
to distribution on loopback, and coalesces only ``GET /v2/<name>/blobs/sha256:<hex>`` without ``Range``:
the first such request for a (name, digest, Authorization) starts one fetch from distribution; the bytes go
into an unnamed spool file (``O_TMPFILE`` on the cache's volume, gone when the last reader is done) and
every puller of the same key, the first included, streams from it as it grows. A fetch that ends short or
whose bytes do not hash to the digest is cut off one byte before its end for everyone: no puller gets a
complete-looking wrong blob. Manifests, HEADs, ``/v2/``, ranges and everything else pass through unchanged.

Standard library only, so that it starts small (``python -m extension.front``); see :mod:`.server`.
"""
