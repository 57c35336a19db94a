"""Data-path e2e: real distribution registries, crane and containerd on this machine (marker ``e2e``)."""
