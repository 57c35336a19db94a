"""Names, labels and constants computed exactly as the Gardener extension computes them."""

from __future__ import annotations

import hashlib

UPSTREAM_HOST_LABEL = "upstream-host"
RESOURCE_PREFIX = "registry-"
# StatefulSet pods with names over 52 characters fail (kubernetes#64023): 52 - len("registry-") = 43.
MAX_UPSTREAM_LABEL_LENGTH = 43
MAX_SERVICE_NAME_SUFFIX_LENGTH = 63 - len(RESOURCE_PREFIX)  # a Service name is a DNS label
DOCKER_IO = "docker.io"
DOCKER_IO_REMOTE_URL = "https://registry-1.docker.io"
# containerd's hosts directory on a node holds a directory per upstream and, beside them, the caches' CA bundle
# under this name: no upstream may be named like it.
CA_BUNDLE_FILE = "ca-bundle.pem"


def upstream_label_value(upstream: str) -> str:
    """``ComputeUpstreamLabelValue``: ``:`` becomes ``-``; longer than 43 characters is cut to 37 plus
    ``-`` and the first 5 hex digits of the sha256 of the upstream."""
    label = upstream.replace(":", "-")
    raw = upstream.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_UPSTREAM_LABEL_LENGTH:  # Go measures and cuts bytes
        digest = hashlib.sha256(raw).hexdigest()[:5]
        cut = label.encode("utf-8", "surrogatepass")[:MAX_UPSTREAM_LABEL_LENGTH - 6].decode("utf-8", "replace")
        label = f"{cut}-{digest}"
    return label


def resource_name(upstream: str) -> str:
    """``ComputeKubernetesResourceName``: ``registry-`` plus the label value with ``.`` as ``-``."""
    return RESOURCE_PREFIX + upstream_label_value(upstream).replace(".", "-")


def service_name(upstream: str, service_name_suffix: str | None) -> str:
    """``ComputeServiceName``: ``registry-<suffix>`` when a suffix is set, else the resource name."""
    if service_name_suffix is not None:  # set, even if empty (then invalid), as Go's pointer check
        return RESOURCE_PREFIX + service_name_suffix
    return resource_name(upstream)


def default_remote_url(upstream: str) -> str:
    """``GetUpstreamURL``: ``https://registry-1.docker.io`` for docker.io, else ``https://<upstream>``."""
    return DOCKER_IO_REMOTE_URL if upstream == DOCKER_IO else f"https://{upstream}"


def labels(upstream: str) -> dict[str, str]:
    """``GetLabels``: the selector labels of every object of a cache."""
    return {"app": resource_name(upstream), UPSTREAM_HOST_LABEL: upstream_label_value(upstream)}
