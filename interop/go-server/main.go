// A grpc-go server with grpc-go's default settings, for the proxy's
// keepalive test (proxy/tests/it/keepalive.rs): it serves grpc.health.v1
// (Check, and Watch, a server stream that stays quiet until the status
// changes) and prints every connection it accepts, so a test sees a
// connection cut by GOAWAY too_many_pings and re-dialled.
//
// Only the keepalive enforcement's MinTime can change (--min-ping-interval),
// so a test can scale grpc-go's 5 minutes down to seconds; pings on a
// connection without calls stay forbidden, as by default.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		n := l.accepted.Add(1)
		fmt.Printf("accepted connection %d from %s\n", n, c.RemoteAddr())
	}
	return c, err
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	minPing := flag.Duration("min-ping-interval", 0,
		"keepalive enforcement MinTime (0: grpc-go's default, 5m)")
	flag.Parse()

	var opts []grpc.ServerOption
	if *minPing > 0 {
		opts = append(opts, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             *minPing,
			PermitWithoutStream: false,
		}))
	}
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "listen %s: %v\n", *addr, err)
		os.Exit(1)
	}
	fmt.Printf("listening on %s\n", lis.Addr())
	server := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(server, health.NewServer())
	started := time.Now()
	if err := server.Serve(&countingListener{Listener: lis}); err != nil {
		fmt.Fprintf(os.Stderr, "serve (after %s): %v\n", time.Since(started), err)
		os.Exit(1)
	}
}
