#!/usr/bin/env python3
"""Where the proxy's CPU goes per call: perf samples of the proxy under the
load benchmark's unary load.

Started by `scripts/bench profile` with the `profiling` build (the release
build with symbols). Three greeter backends and h2load on CPU 1, the proxy on
CPU 0 (as in bench/run.py); after a warm-up, `perf record` samples the proxy
with call graphs while h2load runs. Prints the CPU per call of the run, the
functions with the most samples of their own, and the share of samples by
crate (the first path segment of the symbol; `[kernel]` for the kernel's,
`libc` for the C library's), and keeps perf.data for `perf report -i`.
"""

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import scale
from run import (BACKENDS, BenchError, check_calls, cpu_seconds, grpc_frame, hello_request, log,
                 run_h2load, start_backends, start_peer, stop_backends)


def crate_of(symbol, dso):
    if dso.startswith("[kernel") or symbol.startswith("[k]"):
        return "[kernel]"
    if "libc" in dso:
        return "libc"
    name = re.sub(r"^<|^_<", "", symbol.strip())
    name = name.split("<")[0]
    first = name.split("::")[0].strip()
    return first or "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="1x100", help="connections x streams")
    parser.add_argument("--seconds", type=int, default=8, help="seconds sampled")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--frequency", type=int, default=999, help="samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--endpoints", type=int, default=BACKENDS,
                        help="backend endpoints (beyond 3: one greeter process serving them all, "
                             "as in bench/scale.py)")
    parser.add_argument("--out", default=None, help="directory for perf.data (default: a temp dir)")
    for tool in ("proxy", "greeter_server", "greeter_client", "h2load", "perf"):
        parser.add_argument(f"--{tool.replace('_', '-')}", dest=tool, required=True)
    args = parser.parse_args()
    conns, streams = (int(x) for x in args.scenario.split("x"))
    tools = {t: getattr(args, t) for t in ("proxy", "greeter_server", "greeter_client", "h2load")}
    workdir = Path(args.out or tempfile.mkdtemp(prefix="grpc-balancer-profile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data_file = workdir / "request.bin"
    data_file.write_bytes(grpc_frame(hello_request("bench")))
    perf_data = workdir / "perf.data"

    if args.endpoints == BACKENDS:
        backends = start_backends(tools, workdir, "1")
        ports = [p for _, p, _ in backends]
    else:
        ports = scale.free_ports(args.endpoints)
        backends = scale.start_backends(tools, ports, workdir, "1")
    proxy = None
    try:
        proxy, port, _ = start_peer("grpc-balancer", tools, ports, workdir, "0")
        check_calls(tools, port, "1", args.endpoints)
        run_h2load(tools, port, conns, streams, args.warmup, data_file, "1")
        result = {}

        def load():
            result["h2load"] = run_h2load(tools, port, conns, streams, args.seconds + 2, data_file, "1")

        loader = threading.Thread(target=load)
        cpu_before = cpu_seconds(proxy.pid)
        loader.start()
        log(f"sampling the proxy (pid {proxy.pid}) for {args.seconds} s")
        subprocess.run([args.perf, "record", "-q", "-F", str(args.frequency), "-g", "--call-graph", "dwarf,16384",
                        "-p", str(proxy.pid), "-o", str(perf_data), "--", "sleep", str(args.seconds)],
                       check=True, stdout=subprocess.DEVNULL)
        loader.join()
        cpu = cpu_seconds(proxy.pid) - cpu_before
    finally:
        if proxy is not None:
            proxy.stop()
        if isinstance(backends, list):
            stop_backends(backends)
        else:
            backends.stop()

    calls = result["h2load"]["succeeded"]
    print(f"\n{calls:,} calls at {args.scenario} over {args.endpoints} endpoints in {args.seconds + 2} s; "
          f"the proxy used {cpu:.2f} CPU-s: {cpu / calls * 1e6:.1f} us per call ({cpu / calls * 1e5:.2f} CPU-s per 100k calls)\n")
    report = subprocess.run(
        [args.perf, "report", "-i", str(perf_data), "--no-children", "--stdio", "-g", "none",
         "--sort", "dso,symbol", "--percent-limit", "0.05"],
        capture_output=True, text=True, check=True).stdout
    rows = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if m:
            # The symbol, without the padding and columns perf may print after it.
            symbol = re.sub(r"\s{2,}.*$", "", m.group(4).strip())
            rows.append((float(m.group(1)), m.group(2), symbol))
    print(f"Top {args.top} functions by own samples:")
    for share, dso, symbol in rows[:args.top]:
        print(f"  {share:5.1f}%  {symbol[:110]}")
    by_crate = collections.Counter()
    for share, dso, symbol in rows:
        by_crate[crate_of(symbol, dso)] += share
    print("\nShare of samples by crate:")
    for crate, share in by_crate.most_common(15):
        print(f"  {share:5.1f}%  {crate}")
    print(f"\nperf.data: {perf_data} (perf report -i {perf_data})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, subprocess.CalledProcessError) as error:
        print(f"profile: {error}", file=sys.stderr)
        sys.exit(1)
