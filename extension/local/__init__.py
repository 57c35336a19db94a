"""The local cluster: a real one-node Kubernetes from processes on this machine (no Docker), its images and
the test registries it pulls from. Used by ``registry-cache local-up`` and the e2e tests."""
