// A kubelet credential provider plugin (KEP-2133) for the tests: it exchanges a long-lived identity for the
// short-lived token of tests/e2e/shortlived_server.py, as ecr-credential-provider exchanges AWS credentials for an
// ECR authorization token. Built by hack/test-credential-provider-bin.sh (go mod tidy writes go.sum in a copy).
module registry-cache/hack/go/test-credential-provider

go 1.24

require (
	k8s.io/apimachinery v0.34.4
	k8s.io/kubelet v0.34.4
)
