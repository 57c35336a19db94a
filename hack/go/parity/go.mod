// Parity harness: runs the validation of the real Gardener registry-cache extension on JSON lines so that
// tests/integration/test_gardener_parity.py can compare it with api/. Built by hack/parity.sh, which copies
// this module to a temporary directory and runs `go mod tidy` there (no go.sum is kept in the repository).
module registry-cache/hack/go/parity

go 1.26.2

require (
	github.com/gardener/gardener-extension-registry-cache v0.24.0
	k8s.io/api v0.36.2
	k8s.io/apimachinery v0.36.2
)
