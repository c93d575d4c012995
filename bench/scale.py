#!/usr/bin/env python3
"""How the cost of a call grows with the size of the configuration.

Started by scripts/bench (see bench/README.md). The same unary load
(h2load, 1 connection x 100 streams) goes through one listener of each peer
while the configuration grows in two directions:

  - endpoints: the listener balances round robin over 3, 30 or 300 greeter
    backends (one greeter process serving every port, pinned with the load);
  - balancings: the peer has 1, 10 or 100 listeners (each with the same 3
    backends), and the load goes to the first.

Printed per peer and size, medians of the runs: calls/s, the peer's CPU
seconds per 100,000 calls, and its peak RSS; then each peer's CPU per call at
the largest size relative to the smallest (a per-call cost that does not grow
with the configuration stays near 1.0x).
"""

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import footprint
from run import (BenchError, Process, add_peer_options, check_calls, cpu_seconds, grpc_frame,
                 hello_request, log, peak_rss_mib, peer_options, pinned, run_h2load)

PEERS = ("grpc-balancer", "haproxy", "envoy", "nginx")
TOOLS = ("proxy", "greeter_server", "greeter_client", "haproxy", "envoy", "nginx", "h2load")


def free_ports(count):
    """`count` distinct free ports: held open together while chosen, so the
    kernel does not hand out one twice."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_backends(tools, ports, workdir, cpu):
    argv = [tools["greeter_server"], "--name", "backend"]
    for port in ports:
        argv += ["--listen", f"127.0.0.1:{port}"]
    process = Process(f"backends-{len(ports)}", pinned(cpu, argv), workdir,
                      env={"TOKIO_WORKER_THREADS": "1", "GREETER_LOG": "error"})
    for port in ports:
        process.wait_port(port)
    return process


def counts_of(process):
    lines = [line for line in process.stop().splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"{process.name} printed no counters:\n{process.stderr_tail()}")
    return json.loads(lines[-1])["counts"]


def one_run(peer, endpoints, balancings, args, tools, data_file, workroot):
    workdir = Path(tempfile.mkdtemp(prefix=f"scale-{peer}-", dir=workroot))
    ports = free_ports(endpoints + balancings)
    backend_ports = ports[:endpoints]
    backends = start_backends(tools, backend_ports, workdir, args.load_cpu)
    process = None
    try:
        frontends = [(f"b{i}", ports[endpoints + i], backend_ports) for i in range(balancings)]
        process, admin, _ = footprint.start(peer, tools, frontends, workdir, args.proxy_cpu)
        port = frontends[0][1]
        for _, p, _ in frontends:
            footprint.wait_until(f"listening on {p}", lambda p=p: footprint.accepting(p), process)
        if admin is not None:
            footprint.wait_until("/ready", lambda: footprint.ready(admin), process)
        # Every call must succeed and every endpoint must answer.
        check_calls(tools, port, args.load_cpu, endpoints)
        warm = run_h2load(tools, port, 1, 100, args.warmup, data_file, args.load_cpu)
        cpu_before = cpu_seconds(process.pid)
        main = run_h2load(tools, port, 1, 100, args.duration, data_file, args.load_cpu)
        cpu_after = cpu_seconds(process.pid)
        rss = peak_rss_mib(process.pid)
    finally:
        if process is not None:
            process.stop()
        counts = counts_of(backends)
    problems = []
    for name, run in (("warm-up", warm), ("measured", main)):
        if run.get("failed", 0) or run.get("errored", 0) or run.get("timeout", 0):
            problems.append(f"h2load {name}: {run}")
    if counts["answered_error"]:
        problems.append(f"backends answered {counts['answered_error']} calls with an error")
    return {
        "peer": peer, "endpoints": endpoints, "balancings": balancings,
        "calls_per_s": main["succeeded"] / main["elapsed"],
        "cpu_s_per_100k": (cpu_after - cpu_before) / main["succeeded"] * 100_000,
        "peak_rss_mib": rss, "problems": problems,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per peer and size (median taken)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--endpoints", default="3,30,300", help="endpoint counts (one balancing)")
    parser.add_argument("--balancings", default="1,10,100", help="balancing counts (3 endpoints each)")
    add_peer_options(parser, PEERS, TOOLS, "scale.json")
    args = parser.parse_args()
    peers, tools = peer_options(parser, args, PEERS, TOOLS)
    sizes = [(int(n), 1) for n in args.endpoints.split(",") if n]
    sizes += [(3, int(m)) for m in args.balancings.split(",") if m and (3, int(m)) not in sizes]

    workroot = Path(tempfile.mkdtemp(prefix="grpc-balancer-scale-"))
    data_file = workroot / "request.bin"
    data_file.write_bytes(grpc_frame(hello_request("bench")))
    runs = []
    started = time.monotonic()
    for run in range(args.runs):
        for endpoints, balancings in sizes:
            for peer in peers:
                log(f"scale run {run + 1}/{args.runs}: {peer}, {balancings} balancings x {endpoints} endpoints")
                runs.append(one_run(peer, endpoints, balancings, args, tools, data_file, workroot))
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(runs, indent=2))

    def med(peer, endpoints, balancings, key):
        values = [r[key] for r in runs
                  if (r["peer"], r["endpoints"], r["balancings"]) == (peer, endpoints, balancings)]
        return statistics.median(values)

    print(f"\nScale: 1x100 unary load through one listener (medians of {args.runs} runs, "
          f"{args.duration} s each; {time.monotonic() - started:.0f} s in all)\n")
    print(f"{'peer':<14} {'balancings':>10} {'endpoints':>9} {'calls/s':>9} {'CPU s/100k':>11} {'RSS MiB':>8}")
    for endpoints, balancings in sizes:
        for peer in peers:
            print(f"{peer:<14} {balancings:>10} {endpoints:>9} "
                  f"{med(peer, endpoints, balancings, 'calls_per_s'):>9,.0f} "
                  f"{med(peer, endpoints, balancings, 'cpu_s_per_100k'):>11.2f} "
                  f"{med(peer, endpoints, balancings, 'peak_rss_mib'):>8.1f}")
    print()
    e_small, e_large = sizes[0], max((s for s in sizes if s[1] == 1), key=lambda s: s[0])
    b_large = max(sizes, key=lambda s: s[1])
    for peer in peers:
        base = med(peer, *e_small, "cpu_s_per_100k")
        print(f"{peer}: CPU per call at {e_large[0]} endpoints {med(peer, *e_large, 'cpu_s_per_100k') / base:.2f}x "
              f"and at {b_large[1]} balancings {med(peer, *b_large, 'cpu_s_per_100k') / base:.2f}x "
              f"that of {e_small[1]} balancing x {e_small[0]} endpoints")
    problems = [p for r in runs for p in r["problems"]]
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"\nEvery run: {args.results}")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"scale: {error}", file=sys.stderr)
        sys.exit(1)
