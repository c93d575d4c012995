#!/usr/bin/env python3
"""Streaming benchmark: grpc-balancer against a direct connection, HAProxy, Envoy and nginx.

Started by scripts/bench (see bench/README.md). The set-up of the load
benchmark (bench/run.py): three greeter backends behind each peer with round
robin, the peer pinned to CPU 0, backends and load to CPU 1. The load is
`greeter-bench` (tonic), one mode at a time:

  server-stream  SayHelloStream calls of many small replies: messages/s
  ping-pong      Chat streams, one request and its reply at a time:
                 round trips/s and the round-trip p50/p99
  download       SayHelloStream replies of 1 MiB: MB/s towards the client
  upload         CollectHellos requests of 1 MiB: MB/s towards the backends

Every reply is checked by greeter-bench (count, sequence, payload size) and
the backends' own counters must match its calls; a peer that fails a mode is
printed as a PROBLEM with the error.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import (BACKENDS, PEERS as LOAD_PEERS, BenchError, add_peer_options, check_calls, cpu_seconds,
                 fmt, log, peak_rss_mib, peer_options, pinned, print_peer_configs, ratio, start_backends,
                 start_peer, stop_backends)

# h2-floor, the load part's bare forwarder, has no flow control of its own:
# not a fair peer for 1 MiB streams.
PEERS = tuple(p for p in LOAD_PEERS if p != "h2-floor")
TOOLS = ("proxy", "greeter_server", "greeter_client", "greeter_bench", "haproxy", "envoy", "nginx")
MIB = 1 << 20
# mode: greeter-bench options, the backend counter its calls land in, and the
# unit the proxy's CPU is given per.
MODES = {
    "server-stream": {"options": ["--concurrency", "16", "--messages-per-call", "1000"],
                      "counter": "say_hello_stream"},
    "ping-pong": {"options": ["--concurrency", "10"], "counter": "chat"},
    "download": {"options": ["--concurrency", "4", "--messages-per-call", "16",
                             "--payload-bytes", str(MIB)], "counter": "say_hello_stream"},
    "upload": {"options": ["--concurrency", "4", "--messages-per-call", "16",
                           "--payload-bytes", str(MIB)], "counter": "collect_hellos"},
}
CHECK_CALLS = 300


def run_bench(tools, port, mode, seconds, load_cpu):
    argv = [tools["greeter_bench"], "--target", f"127.0.0.1:{port}", "--mode", mode,
            "--duration-s", str(seconds), *MODES[mode]["options"]]
    try:
        result = subprocess.run(pinned(load_cpu, argv), capture_output=True, text=True,
                                timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"greeter-bench {mode} did not end within {seconds + 60} s")
    if result.returncode != 0:
        raise BenchError(f"greeter-bench {mode} failed ({result.returncode}): "
                         f"{result.stderr.strip() or result.stdout.strip()}")
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"greeter-bench {mode} printed no report: {result.stdout}{result.stderr}")


def one_run(peer, mode, args, tools, workroot):
    workdir = Path(tempfile.mkdtemp(prefix=f"stream-{peer}-{mode}-", dir=workroot))
    backends = start_backends(tools, workdir, args.load_cpu)
    peer_process = None
    try:
        peer_process, port, how = start_peer(peer, tools, [p for _, p, _ in backends], workdir,
                                             args.proxy_cpu, args.proxy_threads)
        args.peer_configs.setdefault(peer, how)
        check_calls(tools, port, args.load_cpu, 1 if peer == "direct" else BACKENDS)
        warm = run_bench(tools, port, mode, args.warmup, args.load_cpu)
        pid = peer_process.pid if peer_process else None
        cpu_before = cpu_seconds(pid) if pid else None
        main = run_bench(tools, port, mode, args.duration, args.load_cpu)
        cpu_after = cpu_seconds(pid) if pid else None
        rss = peak_rss_mib(pid) if pid else None
    finally:
        if peer_process is not None:
            peer_process.stop()
        counts = stop_backends(backends)

    problems = []
    # Every call greeter-bench made completed with OK, so the backends must
    # have counted exactly as many, and no error.
    counter = MODES[mode]["counter"]
    received = sum(c[counter] for c in counts.values())
    answered_ok = sum(c["answered_ok"] for c in counts.values())
    answered_error = sum(c["answered_error"] for c in counts.values())
    calls = warm["calls"] + main["calls"]
    if answered_error or received != calls or answered_ok != CHECK_CALLS + calls:
        problems.append(f"backends counted {received} {counter} calls, {answered_ok} OK and "
                        f"{answered_error} errors; greeter-bench made {calls} calls and the check "
                        f"{CHECK_CALLS}")
    cpu = None if pid is None else cpu_after - cpu_before
    unit = main["payload_bytes"] / 1e9 if mode in ("download", "upload") else main["messages"] / 1e5
    return {
        "peer": peer, "mode": mode, "report": main,
        "messages_per_s": main["messages_per_s"], "mb_per_s": main["mb_per_s"],
        "p50_us": main["round_trip_p50_us"], "p99_us": main["round_trip_p99_us"],
        # CPU seconds per 100,000 messages, or per GB for the 1 MiB modes.
        "cpu_s_per_unit": None if cpu is None or unit == 0 else cpu / unit,
        "peak_rss_mib": rss,
        "calls_by_backend": main["calls_by_backend"],
        "problems": problems,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    summary = {}
    for run in runs:
        summary.setdefault(run["mode"], {}).setdefault(run["peer"], []).append(run)
    for mode, peers in summary.items():
        for peer, group in peers.items():
            good = [r for r in group if r.get("messages_per_s") is not None]
            peers[peer] = {
                "runs": len(good),
                **{key: median(r[key] for r in good)
                   for key in ("messages_per_s", "mb_per_s", "p50_us", "p99_us",
                               "cpu_s_per_unit", "peak_rss_mib")},
                "problems": [p for r in group for p in r["problems"]],
            }
    return summary


# The figure each mode is judged by, its column heading and digits; the unit
# the CPU is given per.
HEADLINE = {
    "server-stream": ("messages_per_s", "msgs/s", 0, "CPU s/100k msgs"),
    "ping-pong": ("messages_per_s", "round trips/s", 0, "CPU s/100k rt"),
    "download": ("mb_per_s", "MB/s down", 1, "CPU s/GB"),
    "upload": ("mb_per_s", "MB/s up", 1, "CPU s/GB"),
}


def print_report(summary, args, peers, elapsed):
    print()
    print(f"Streaming: {args.runs} run(s) x {args.duration} s per peer and mode, medians; 3 greeter "
          f"backends, round robin; proxy {args.proxy_threads} thread(s)"
          + ("" if args.proxy_cpu is None else f" on CPU {args.proxy_cpu}, greeter-bench and "
             f"backends on CPU {args.load_cpu}") + f"; {elapsed:.0f} s in all")
    for mode, peer_figures in summary.items():
        key, heading, digits, cpu_heading = HEADLINE[mode]
        print()
        print(f"## {mode}: greeter-bench {' '.join(MODES[mode]['options'])}")
        latency = mode == "ping-pong"
        header = (f"{'peer':<14} {heading:>14} "
                  + (f"{'p50 us':>8} {'p99 us':>8} " if latency else "")
                  + f"{cpu_heading:>16} {'RSS MiB':>8}  {'vs haproxy':>10} {'vs envoy':>9} "
                  f"{'vs nginx':>9} {'vs direct':>9}")
        print(header)
        print("-" * len(header))
        for peer in peers:
            s = peer_figures.get(peer)
            if s is None:
                continue
            print(f"{peer:<14} {fmt(s[key], digits):>14} "
                  + (f"{fmt(s['p50_us'], 0):>8} {fmt(s['p99_us'], 0):>8} " if latency else "")
                  + f"{fmt(s['cpu_s_per_unit'], 3):>16} {fmt(s['peak_rss_mib']):>8}  "
                  + " ".join(f"{ratio(s[key], peer_figures.get(other, {}).get(key)):>{width}}"
                             for other, width in (("haproxy", 10), ("envoy", 9), ("nginx", 9),
                                                  ("direct", 9))))
        ours = peer_figures.get("grpc-balancer")
        if ours:
            for other in ("haproxy", "envoy", "nginx"):
                theirs = peer_figures.get(other)
                if theirs and theirs["runs"]:
                    print(f"grpc-balancer / {other}: {heading} {ratio(ours[key], theirs[key])}, "
                          f"CPU per unit {ratio(ours['cpu_s_per_unit'], theirs['cpu_s_per_unit'])}, "
                          + (f"p50 {ratio(ours['p50_us'], theirs['p50_us'])}, "
                             f"p99 {ratio(ours['p99_us'], theirs['p99_us'])}, " if latency else "")
                          + f"peak RSS {ratio(ours['peak_rss_mib'], theirs['peak_rss_mib'])}")
        for peer, s in peer_figures.items():
            for problem in dict.fromkeys(s["problems"]):
                print(f"PROBLEM {peer} {mode}: {problem}")
    print_peer_configs(peers, args.peer_configs)
    print()
    print("msgs/s: replies received per second; round trips/s: ping-pong replies per second, p50/p99 from")
    print("every round trip's sorted sample; MB/s: payload 10^6 bytes per second. CPU: the proxy's user+system")
    print("seconds (/proc/PID/stat) per 100,000 messages or per GB of payload; RSS: peak resident set (VmHWM).")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per peer and mode (median taken)")
    parser.add_argument("--duration", type=int, default=5, help="seconds of measured load per run")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load first")
    parser.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    parser.add_argument("--proxy-threads", type=int, default=1,
                        help="worker threads of each proxy (above 1: the proxy is not pinned)")
    add_peer_options(parser, PEERS, TOOLS, "streaming.json")
    args = parser.parse_args()
    if args.runs < 1 or args.duration < 1 or args.warmup < 1 or args.proxy_threads < 1:
        parser.error("--runs, --duration, --warmup and --proxy-threads must be at least 1")
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    peers, tools = peer_options(parser, args, PEERS, TOOLS)
    if args.proxy_threads > 1:
        args.proxy_cpu = None
    args.peer_configs = {}

    runs = []
    started = time.monotonic()
    total = args.runs * len(modes) * len(peers)
    with tempfile.TemporaryDirectory(prefix="grpc-balancer-streaming-") as workroot:
        done = 0
        for run_index in range(args.runs):
            for mode in modes:
                # Peers alternate within each round so slow drifts of the
                # machine spread over all of them.
                for peer in peers:
                    done += 1
                    log(f"[{done}/{total}] streaming run {run_index + 1}, {mode}, {peer}")
                    try:
                        run = one_run(peer, mode, args, tools, Path(workroot))
                    except BenchError as error:
                        log(f"{peer} failed {mode}: {error}")
                        runs.append({"peer": peer, "mode": mode, "messages_per_s": None,
                                     "problems": [str(error).strip()]})
                        continue
                    runs.append(run)
                    log(f"    {run['messages_per_s']:,.0f} msgs/s, {run['mb_per_s']:,.1f} MB/s, "
                        f"p50 {fmt(run['p50_us'], 0)} us, p99 {fmt(run['p99_us'], 0)} us, "
                        f"CPU/unit {fmt(run['cpu_s_per_unit'], 3)} s, RSS {fmt(run['peak_rss_mib'])} MiB"
                        + ("" if not run["problems"] else f", PROBLEMS: {run['problems']}"))
    summary = summarize(runs)
    print_report(summary, args, peers, time.monotonic() - started)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    log(f"results written to {results}")
    return 1 if any(s["problems"] for p in summary.values() for s in p.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
