// Wrapper module that builds the etcd server binary from the published
// go.etcd.io/etcd/server/v3 module. Used by hack/control-plane-bins.sh,
// which copies this directory to a temporary build dir, runs `go mod tidy`
// there (so no go.sum is committed) and builds it.
//
// Pinned to the etcd version listed for etcd in build/dependencies.yaml of
// the Kubernetes release pinned in ../kube-apiserver/go.mod (v1.34.4 -> 3.6.5).
module registry-cache/hack/go/etcd

go 1.24

require go.etcd.io/etcd/server/v3 v3.6.5
