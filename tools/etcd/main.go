// Builds etcd's own main: etcd publishes no installable command for 3.5 via the module
// proxy, but etcdmain.Main is the whole server binary.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
