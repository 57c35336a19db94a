// Command kube-proxy is a thin wrapper around the upstream k8s.io/kubernetes/cmd/kube-proxy main package
// (same imports, same behaviour). It exists only so hack/node-bins.sh can build the binary from the
// published Go module with the local Go toolchain.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	command := app.NewProxyCommand()
	code := cli.Run(command)
	os.Exit(code)
}
