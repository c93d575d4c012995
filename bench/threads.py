#!/usr/bin/env python3
"""Thread scaling: the unary load with each proxy at 1 and at 2 worker threads.

Started by scripts/bench (see bench/README.md). The load benchmark's run
(bench/run.py: three greeter backends, h2load, the correctness check and the
backends' counters) with each proxy first at one thread pinned to CPU 0, as
in the load part, then at two threads (grpc-balancer `--threads 2`, HAProxy
`nbthread 2`, Envoy `--concurrency 2`) and not pinned: it may use both
cores. h2load and the backends stay on CPU 1 in both cases, so with two
threads the proxy shares that core with them: on a 2-core machine the figure
shows what a second thread buys when the cores are not free, not a proxy's
scaling on idle cores. nginx is left out: its workers are processes, and one
worker per core needs its master process, unlike the one-process set-up of
the other parts.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from run import (BenchError, add_peer_options, fmt, grpc_frame, hello_request, log, median,
                 one_run, parse_scenario, peer_options, ratio)

PEERS = ("grpc-balancer", "haproxy", "envoy")
TOOLS = ("proxy", "greeter_server", "greeter_client", "haproxy", "envoy", "nginx", "h2load")
THREADS = (1, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per peer and thread count (median)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first")
    parser.add_argument("--scenario", default="8x16", type=parse_scenario,
                        help="CONNECTIONSxSTREAMS of h2load (default 8x16: several connections, "
                             "so that a proxy that spreads connections over threads can use both)")
    add_peer_options(parser, PEERS, TOOLS, "threads.json")
    args = parser.parse_args()
    if args.runs < 1 or args.duration < 1 or args.warmup < 1:
        parser.error("--runs, --duration and --warmup must be at least 1")
    peers, tools = peer_options(parser, args, PEERS, TOOLS)
    pinned_cpu = args.proxy_cpu
    configs = {}
    runs = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grpc-balancer-threads-") as workroot:
        workroot = Path(workroot)
        data_file = workroot / "hello.grpc"
        data_file.write_bytes(grpc_frame(hello_request("bench")))
        total = args.runs * len(THREADS) * len(peers)
        done = 0
        for run_index in range(args.runs):
            for threads in THREADS:
                args.proxy_threads = threads
                args.proxy_cpu = pinned_cpu if threads == 1 else None
                args.peer_configs = configs.setdefault(threads, {})
                for peer in peers:
                    done += 1
                    log(f"[{done}/{total}] threads run {run_index + 1}, {peer} at {threads} thread(s)")
                    try:
                        run = one_run(peer, args.scenario, args, tools, data_file, workroot)
                    except BenchError as error:
                        log(f"{peer} failed: {error}")
                        run = {"peer": peer, "calls_per_s": None, "cpu_s_per_100k": None,
                               "p99_ms": None, "peak_rss_mib": None,
                               "problems": [str(error).strip()]}
                    run["threads"] = threads
                    runs.append(run)
                    log(f"    {fmt(run['calls_per_s'], 0)} calls/s, CPU/100k "
                        f"{fmt(run['cpu_s_per_100k'], 2)} s"
                        + ("" if not run["problems"] else f", PROBLEMS: {run['problems']}"))

    def med(peer, threads, key):
        return median(r[key] for r in runs if (r["peer"], r["threads"]) == (peer, threads))

    conns, streams = args.scenario
    print(f"\nThreads: unary load {conns}x{streams} (h2load), medians of {args.runs} runs x "
          f"{args.duration} s; 1 thread: proxy on CPU {pinned_cpu}; 2 threads: proxy on both "
          f"CPUs; h2load and backends on CPU {args.load_cpu} in both; "
          f"{time.monotonic() - started:.0f} s in all\n")
    header = (f"{'peer':<14} {'calls/s 1t':>11} {'calls/s 2t':>11} {'2t/1t':>6} "
              f"{'CPU s/100k 1t':>14} {'CPU s/100k 2t':>14} {'p99 ms 1t':>10} {'p99 ms 2t':>10} "
              f"{'RSS 1t':>7} {'RSS 2t':>7}")
    print(header)
    print("-" * len(header))
    for peer in peers:
        one, two = (med(peer, t, "calls_per_s") for t in THREADS)
        print(f"{peer:<14} {fmt(one, 0):>11} {fmt(two, 0):>11} {ratio(two, one):>6} "
              f"{fmt(med(peer, 1, 'cpu_s_per_100k'), 2):>14} {fmt(med(peer, 2, 'cpu_s_per_100k'), 2):>14} "
              f"{fmt(med(peer, 1, 'p99_ms'), 2):>10} {fmt(med(peer, 2, 'p99_ms'), 2):>10} "
              f"{fmt(med(peer, 1, 'peak_rss_mib')):>7} {fmt(med(peer, 2, 'peak_rss_mib')):>7}")
    print()
    for threads in THREADS:
        for other in peers:
            if other != "grpc-balancer" and "grpc-balancer" in peers:
                print(f"grpc-balancer / {other} at {threads} thread(s): calls/s "
                      f"{ratio(med('grpc-balancer', threads, 'calls_per_s'), med(other, threads, 'calls_per_s'))}, "
                      f"CPU per call "
                      f"{ratio(med('grpc-balancer', threads, 'cpu_s_per_100k'), med(other, threads, 'cpu_s_per_100k'))}")
    problems = [(r["peer"], r["threads"], p) for r in runs for p in r["problems"]]
    for peer, threads, problem in dict.fromkeys(problems):
        print(f"PROBLEM {peer} at {threads} thread(s): {problem}")
    print("\n## how each peer ran at 2 threads (the configuration of its first run)")
    for peer in peers:
        if peer in configs.get(2, {}):
            print(f"\n### {peer}\n{configs[2][peer].rstrip()}")
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(runs, indent=2))
    log(f"results written to {results}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
