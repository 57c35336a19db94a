// Rendering oracle: runs the deploy of the real Gardener registry-cache extension's components (the registry
// cache Services and caches, its secrets manager, the OperatingSystemConfig ensurers of both extension types)
// against a controller-runtime fake client, so that tests/integration/test_gardener_rendering.py can compare what
// they deliver with what this project delivers. Built by hack/parity.sh render, which copies this module to a
// temporary directory and runs `go mod tidy` there (no go.sum is kept in the repository).
module registry-cache/hack/go/render

go 1.26.2

require (
	github.com/gardener/gardener v1.147.1
	github.com/gardener/gardener-extension-registry-cache v0.24.0
	k8s.io/api v0.36.2
	k8s.io/apimachinery v0.36.2
	sigs.k8s.io/controller-runtime v0.24.1
)

// As github.com/gardener/gardener's own go.mod (v1.147.1): without these, tidy finds the package
// github.com/gardener/cert-management/pkg/apis/cert/v1alpha1 (imported by gardener's pkg/utils/kubernetes/health)
// in two modules, the old root module cert-management v0.23.0 and cert-management/pkg/apis v0.25.0.
exclude github.com/gardener/cert-management v0.22.0

exclude github.com/gardener/cert-management v0.23.0

exclude github.com/gardener/gardener/pkg/apis v1.143.0

exclude github.com/gardener/gardener/pkg/apis v1.144.2
