// Command etcd is a thin wrapper with the same body as etcd's own main
// package (go.etcd.io/etcd/v3 main.go): it only hands over to etcdmain.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
