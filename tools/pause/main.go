// Command pause is the sandbox container of every pod on the local node: it holds the
// pod's namespaces open for the app containers, reaps the zombies it inherits as the
// pod's PID 1 (with a shared PID namespace), and exits on SIGINT or SIGTERM.
//
// It stands in for registry.k8s.io/pause so that the node needs no registry; it is built
// static (CGO_ENABLED=0) and shipped alone on an empty base image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		reapChildren()
	}
}

// reapChildren collects every exited child; one SIGCHLD may stand for several exits.
func reapChildren() {
	for {
		pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
