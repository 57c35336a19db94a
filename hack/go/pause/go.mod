// The sandbox program of the local cluster's pause image (what Kubernetes' build/pause/linux/pause.c does,
// in Go so that it builds with the toolchain we already need). Built by hack/node-bins.sh, packed into an
// image with crane by extension/local/images.py.
module registry-cache/hack/go/pause

go 1.24
