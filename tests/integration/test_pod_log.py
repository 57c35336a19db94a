"""Kube.pod_log against a real kube-apiserver: the request is one the API server accepts (its answer negotiated as
kubectl's is). Here no kubelet runs and the Pod has no node, so the API server answers an empty log itself; an
Accept of text/plain alone got 406 Not Acceptable instead (seen on the node cluster: the plugin caches' condition
stayed Unknown, 'cannot read the log of Pod ...')."""

from __future__ import annotations

import pytest

from extension.runtime.kube import ApiError, Kube


def test_a_pod_log_request_is_acceptable_to_the_api_server(control_plane):
    kube = Kube(control_plane.api_client(), field_manager="kubectl-test")
    kube.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "log-probe", "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/none:1"}]}})
    try:
        try:
            said = kube.pod_log("default", "log-probe", "c", tail_lines=10, limit_bytes=1024)
        except ApiError as exc:
            pytest.fail(f"the API server refused the log request: {exc}")
        assert said == ""
    finally:
        kube.delete("Pod", "log-probe", "default")
