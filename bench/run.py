#!/usr/bin/env python3
"""Benchmark of grpc-balancer against a direct connection, HAProxy and Envoy.

Started by scripts/bench, which installs the tools and builds the release
binaries first; see bench/README.md. Everything runs on loopback: three tonic
greeter backends, one proxy at a time in front of them with round robin, and
h2load making real gRPC unary calls. The proxy is pinned to one core, the
backends and the load generator to the other.
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ("direct", "grpc-balancer", "h2-floor", "haproxy", "envoy", "nginx")
BACKENDS = 3
SAY_HELLO = "/greeter.v1.Greeter/SayHello"
# Calls the correctness check makes through each peer before the load.
CHECK_CALLS = 300
TOOLS = ("proxy", "h2_floor", "greeter_server", "greeter_client", "haproxy", "envoy", "nginx", "h2load")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu, argv):
    return ["taskset", "-c", cpu, *argv] if cpu is not None else argv


class Process:
    """A child process with its output in a file of the work directory."""

    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self.out = open(self.out_path, "w")
        self.err = open(self.err_path, "w")
        self.popen = subprocess.Popen(
            argv, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self):
        return self.popen.pid

    def stderr_tail(self, lines=20):
        try:
            return "".join(self.err_path.read_text(errors="replace").splitlines(True)[-lines:])
        except OSError:
            return ""

    def wait_port(self, port, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n{self.stderr_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise BenchError(f"{self.name} did not listen on {port} within {timeout:.0f} s:\n{self.stderr_tail()}")

    def stop(self, timeout=15.0):
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.out.close()
        self.err.close()
        return self.out_path.read_text(errors="replace")


def cpu_seconds(pid):
    """utime + stime of the whole process, all threads, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise BenchError(f"no VmHWM for pid {pid}")


# ------------------------------------------------------------------- peers

def haproxy_config(frontends, threads=1):
    """frontends: (name, port, backend ports) of each listener; threads: nbthread."""
    # As HAProxy's docs advise for gRPC: HTTP/2 on both sides, one thread (the
    # same single core every peer gets), streams of many client connections
    # multiplexed on the idle server connections (`http-reuse always`; the
    # default `safe` gives each client connection its own server connection),
    # and the per-connection stream limit raised from 100 so that 1x100 is not
    # capped by it. The client and server timeouts are idle times: an hour, so
    # that a quiet long-lived stream is not cut after a minute.
    sections = []
    for name, port, backend_ports in frontends:
        servers = "\n".join(
            f"    server b{i} 127.0.0.1:{p} proto h2" for i, p in enumerate(backend_ports)
        )
        sections.append(f"""frontend {name}
    bind 127.0.0.1:{port} proto h2
    default_backend {name}

backend {name}
    balance roundrobin
{servers}
""")
    return f"""global
    nbthread {threads}
    maxconn 1000
    tune.h2.max-concurrent-streams 1024
    log stderr format raw local0 emerg

defaults
    mode http
    http-reuse always
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s

""" + "\n".join(sections)


def nginx_config(frontends, workdir):
    """frontends: (name, port, backend ports) of each listener."""
    # nginx's gRPC proxy as its docs set it up: an `http2` listener and
    # `grpc_pass` to an upstream group with `keepalive` connections (nginx
    # sends one call at a time on an upstream connection, so without
    # keepalive every call would open a new one). One worker process, no
    # access log, and keepalive_requests raised so that neither the client's
    # connection nor the upstream ones are closed after the default 1,000 calls.
    # For streams: no cap on a call's request body (client_max_body_size is 1m
    # by default, counted over the whole stream, so a 16 MiB upload would end
    # with 413), and the idle timeouts between messages of a stream raised
    # from 60 s to an hour, as for long-lived gRPC streams.
    blocks = []
    for name, port, backend_ports in frontends:
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in backend_ports)
        blocks.append(f"""    upstream {name} {{
{servers}
        keepalive 256;
        keepalive_requests 100000000;
    }}

    server {{
        listen 127.0.0.1:{port} http2;
        location / {{
            grpc_pass grpc://{name};
        }}
    }}
""")
    body = "\n".join(blocks)
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log stderr error;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    keepalive_requests 100000000;
    http2_max_concurrent_streams 1024;
    client_max_body_size 0;
    client_body_timeout 3600s;
    grpc_read_timeout 3600s;
    grpc_send_timeout 3600s;

{body}}}
"""


def envoy_config(frontends):
    """frontends: (name, port, backend ports) of each listener."""
    # Envoy as its gRPC docs set it up: an HTTP/2 connection manager, HTTP/2 to
    # the cluster, route timeout off (streams may be long) and the idle timeout
    # of a stream raised from 5 minutes to an hour, no access log; one worker
    # (`--concurrency 1`, the single core every peer gets).
    listeners, clusters = [], []
    for name, port, backend_ports in frontends:
        endpoints = "\n".join(
            f"""          - endpoint:
              address:
                socket_address: {{ address: 127.0.0.1, port_value: {p} }}"""
            for p in backend_ports
        )
        listeners.append(f"""  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          codec_type: HTTP2
          stream_idle_timeout: 3600s
          route_config:
            virtual_hosts:
            - name: {name}
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {name}, timeout: 0s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
""")
        clusters.append(f"""  - name: {name}
    type: STATIC
    lb_policy: ROUND_ROBIN
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
{endpoints}
""")
    return "static_resources:\n  listeners:\n" + "".join(listeners) + "  clusters:\n" + "".join(clusters)


def start_peer(peer, tools, backend_ports, workdir, proxy_cpu, threads=1):
    """Starts the peer with `threads` worker threads (nginx: one worker process
    whatever `threads`); returns (Process or None, port the load goes to, how
    it runs: command line and configuration file, for the report)."""
    if peer == "direct":
        return None, backend_ports[0], "no proxy: the load goes to one backend"
    port = free_port()
    if peer == "grpc-balancer":
        argv = [tools["proxy"], "--listen", f"127.0.0.1:{port}", "--policy", "round_robin",
                "--admin", f"127.0.0.1:{free_port()}", "--threads", str(threads)]
        for p in backend_ports:
            argv += ["--endpoint", f"127.0.0.1:{p}"]
        process = Process(peer, pinned(proxy_cpu, argv), workdir, env={"GRPC_BALANCER_LOG": "warn"})
    elif peer == "h2-floor":
        # Not a product: the bare h2 forwarder of proxy/examples/h2_floor.rs,
        # the floor of any proxy built on the h2 crate.
        argv = [tools["h2_floor"], "--listen", f"127.0.0.1:{port}"]
        for p in backend_ports:
            argv += ["--endpoint", f"127.0.0.1:{p}"]
        process = Process(peer, pinned(proxy_cpu, argv), workdir)
    elif peer == "haproxy":
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config([("greeters", port, backend_ports)], threads))
        argv = [tools["haproxy"], "-db", "-f", str(config)]
        process = Process(peer, pinned(proxy_cpu, argv), workdir)
    elif peer == "nginx":
        config = workdir / "nginx.conf"
        config.write_text(nginx_config([("greeters", port, backend_ports)], workdir))
        argv = [tools["nginx"], "-p", str(workdir), "-c", str(config), "-e", "stderr"]
        process = Process(peer, pinned(proxy_cpu, argv), workdir)
    elif peer == "envoy":
        config = workdir / "envoy.yaml"
        config.write_text(envoy_config([("greeters", port, backend_ports)]))
        argv = [tools["envoy"], "-c", str(config), "--concurrency", str(threads), "--disable-hot-restart",
                "--log-level", "error"]
        process = Process(peer, pinned(proxy_cpu, argv), workdir)
    else:
        raise BenchError(f"unknown peer {peer}")
    process.wait_port(port)
    how = "$ " + " ".join(str(a) for a in argv) if peer in ("grpc-balancer", "h2-floor") else ""
    if peer in ("haproxy", "nginx", "envoy"):
        how = f"$ {' '.join(str(a) for a in argv)}\n{config.read_text()}"
    return process, port, how


# ---------------------------------------------------------------- backends

def start_backends(tools, workdir, load_cpu):
    backends = []
    for i in range(BACKENDS):
        port = free_port()
        name = f"backend-{i}"
        argv = [tools["greeter_server"], "--listen", f"127.0.0.1:{port}", "--name", name]
        process = Process(name, pinned(load_cpu, argv), workdir,
                          env={"TOKIO_WORKER_THREADS": "1", "GREETER_LOG": "error"})
        backends.append((process, port, name))
    for process, port, _ in backends:
        process.wait_port(port)
    return backends


def stop_backends(backends):
    """Stops the backends; returns their call counters by name."""
    counts = {}
    for process, _, name in backends:
        output = process.stop()
        lines = [line for line in output.splitlines() if line.startswith("{")]
        if not lines:
            raise BenchError(f"{name} printed no counters:\n{process.stderr_tail()}")
        counts[name] = json.loads(lines[-1])["counts"]
    return counts


# -------------------------------------------------------------------- load

def grpc_frame(message):
    return b"\x00" + len(message).to_bytes(4, "big") + message


def hello_request(name):
    """A HelloRequest with only `name` (field 1) set, in protobuf encoding."""
    encoded = name.encode()
    return b"\x0a" + bytes([len(encoded)]) + encoded


H2LOAD_COUNTS = re.compile(r"(\d+) (total|started|done|succeeded|failed|errored|timeout)")


def run_h2load(tools, port, conns, streams, seconds, data_file, load_cpu, log_file=None):
    argv = [tools["h2load"], "-c", str(conns), "-m", str(streams), "-t", "1", "-D", str(seconds),
            "-d", str(data_file), "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    argv.append(f"http://127.0.0.1:{port}{SAY_HELLO}")
    result = subprocess.run(pinned(load_cpu, argv), capture_output=True, text=True,
                            timeout=seconds + 60)
    if result.returncode != 0:
        raise BenchError(f"h2load failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    out = result.stdout
    requests_line = next((l for l in out.splitlines() if l.startswith("requests:")), None)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out)
    if requests_line is None or finished is None:
        raise BenchError(f"unexpected h2load output:\n{out}")
    counts = {kind: int(n) for n, kind in H2LOAD_COUNTS.findall(requests_line)}
    elapsed = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    counts["elapsed"] = elapsed
    status_line = next((l for l in out.splitlines() if l.startswith("status codes:")), "")
    counts["status_codes"] = status_line.split(":", 1)[-1].strip()
    return counts


def latency_percentiles(log_file):
    """p50 and p99 in ms of the successful requests of an h2load log."""
    durations = []
    with open(log_file) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                durations.append(int(parts[2]))
    if not durations:
        raise BenchError("h2load logged no successful request")
    durations.sort()

    def pick(q):
        return durations[min(len(durations) - 1, int(q * len(durations)))] / 1000

    return pick(0.50), pick(0.99)


def check_calls(tools, port, load_cpu, expected_backends):
    """Real gRPC calls through the peer: each must end with grpc-status 0 and
    the calls must reach every backend."""
    argv = [tools["greeter_client"], "--target", f"127.0.0.1:{port}", "--calls", str(CHECK_CALLS),
            "--concurrency", "10", "--json"]
    result = subprocess.run(pinned(load_cpu, argv), capture_output=True, text=True, timeout=60)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"greeter-client failed ({result.returncode}): {result.stdout}{result.stderr}")
    if report["failed"] or len(report["by_backend"]) != expected_backends:
        raise BenchError(f"the correctness check through the peer failed: {report}")
    return report


# -------------------------------------------------------------------- runs

def one_run(peer, scenario, args, tools, data_file, workroot):
    conns, streams = scenario
    workdir = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=workroot))
    backends = start_backends(tools, workdir, args.load_cpu)
    peer_process = None
    try:
        peer_process, port, how = start_peer(peer, tools, [p for _, p, _ in backends], workdir,
                                             args.proxy_cpu, args.proxy_threads)
        args.peer_configs.setdefault(peer, how)
        check_calls(tools, port, args.load_cpu, 1 if peer == "direct" else BACKENDS)
        warm = run_h2load(tools, port, conns, streams, args.warmup, data_file, args.load_cpu)
        pid = peer_process.pid if peer_process else None
        cpu_before = cpu_seconds(pid) if pid else None
        log_file = workdir / "h2load.log"
        main = run_h2load(tools, port, conns, streams, args.duration, data_file, args.load_cpu, log_file)
        cpu_after = cpu_seconds(pid) if pid else None
        rss = peak_rss_mib(pid) if pid else None
        p50, p99 = latency_percentiles(log_file)
        log_file.unlink()
    finally:
        if peer_process is not None:
            peer_process.stop()
        counts = stop_backends(backends)

    problems = []
    for run_name, run in (("warm-up", warm), ("measured", main)):
        if run.get("failed", 0) or run.get("errored", 0) or run.get("timeout", 0):
            problems.append(f"h2load {run_name}: {run}")
    answered_ok = sum(c["answered_ok"] for c in counts.values())
    answered_error = sum(c["answered_error"] for c in counts.values())
    sent_ok = CHECK_CALLS + warm["succeeded"] + main["succeeded"]
    # Calls in flight when h2load stops may reach a backend without being
    # counted by h2load: at most one window of streams per run.
    slack = 2 * conns * streams
    if answered_error or not (sent_ok <= answered_ok <= sent_ok + slack):
        problems.append(
            f"backends answered {answered_ok} OK and {answered_error} errors, "
            f"h2load and the check counted {sent_ok} successes")
    calls_per_s = main["succeeded"] / main["elapsed"]
    cpu_per_100k = (cpu_after - cpu_before) / main["succeeded"] * 100_000 if pid else None
    return {
        "peer": peer, "scenario": f"{conns}x{streams}", "calls_per_s": calls_per_s,
        "p50_ms": p50, "p99_ms": p99, "cpu_s_per_100k": cpu_per_100k, "peak_rss_mib": rss,
        "backend_ok": {name: c["answered_ok"] for name, c in counts.items()},
        "grpc_status_ok": answered_ok, "grpc_status_error": answered_error,
        "h2load": main, "problems": problems,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    by_key = {}
    for run in runs:
        by_key.setdefault((run["scenario"], run["peer"]), []).append(run)
    summary = {}
    for (scenario, peer), group in by_key.items():
        split_totals = {}
        for run in group:
            for name, n in run["backend_ok"].items():
                split_totals[name] = split_totals.get(name, 0) + n
        total = sum(split_totals.values()) or 1
        summary.setdefault(scenario, {})[peer] = {
            "runs": len(group),
            "calls_per_s": median(r["calls_per_s"] for r in group),
            "p50_ms": median(r["p50_ms"] for r in group),
            "p99_ms": median(r["p99_ms"] for r in group),
            "cpu_s_per_100k": median(r["cpu_s_per_100k"] for r in group),
            "peak_rss_mib": median(r["peak_rss_mib"] for r in group),
            "split_percent": {n: round(100 * v / total, 1) for n, v in sorted(split_totals.items())},
            "problems": [p for r in group for p in r["problems"]],
        }
    return summary


def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def print_report(summary, args):
    print()
    print(f"grpc-balancer benchmark: {args.runs} run(s) x {args.duration} s per peer and load, "
          f"medians; 3 greeter backends, round robin; proxy on CPU {args.proxy_cpu}, "
          f"h2load and backends on CPU {args.load_cpu}")
    for scenario, peers in summary.items():
        conns, streams = scenario.split("x")
        print()
        print(f"## {conns} connection(s) x {streams} streams")
        header = (f"{'peer':<14} {'calls/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/100k':>11} "
                  f"{'RSS MiB':>8}  {'vs haproxy':>10} {'vs envoy':>9} {'vs nginx':>9} {'vs direct':>9}  backend split %")
        print(header)
        print("-" * len(header))
        for peer in PEERS:
            if peer not in peers:
                continue
            s = peers[peer]
            split = "/".join(f"{v:g}" for v in s["split_percent"].values())
            print(f"{peer:<14} {fmt(s['calls_per_s'], 0):>10} {fmt(s['p50_ms'], 2):>8} "
                  f"{fmt(s['p99_ms'], 2):>8} {fmt(s['cpu_s_per_100k'], 2):>11} {fmt(s['peak_rss_mib']):>8}  "
                  f"{ratio(s['calls_per_s'], peers.get('haproxy', {}).get('calls_per_s')):>10} "
                  f"{ratio(s['calls_per_s'], peers.get('envoy', {}).get('calls_per_s')):>9} "
                  f"{ratio(s['calls_per_s'], peers.get('nginx', {}).get('calls_per_s')):>9} "
                  f"{ratio(s['calls_per_s'], peers.get('direct', {}).get('calls_per_s')):>9}  {split}")
        ours = peers.get("grpc-balancer")
        if ours:
            for other in ("h2-floor", "haproxy", "envoy", "nginx"):
                theirs = peers.get(other)
                if theirs:
                    print(f"grpc-balancer / {other}: calls/s {ratio(ours['calls_per_s'], theirs['calls_per_s'])}, "
                          f"CPU per call {ratio(ours['cpu_s_per_100k'], theirs['cpu_s_per_100k'])}, "
                          f"p99 {ratio(ours['p99_ms'], theirs['p99_ms'])}, "
                          f"peak RSS {ratio(ours['peak_rss_mib'], theirs['peak_rss_mib'])}")
        for peer, s in peers.items():
            for problem in s["problems"]:
                print(f"PROBLEM {peer}: {problem}")
    print_peer_configs(PEERS, args.peer_configs)
    print()
    print("calls/s: successful calls per second (h2load 2xx, and the backends answered grpc-status 0 to as many);")
    print("vs columns: calls/s of the row divided by that peer's. CPU s/100k: proxy user+system CPU seconds per")
    print("100,000 calls from /proc/PID/stat; RSS: peak resident set (VmHWM). h2-floor is not a product: the")
    print("bare h2 forwarder of proxy/examples/h2_floor.rs, the least a proxy on the h2 crate costs per call.")


def print_peer_configs(peers, configs):
    """How each peer ran, in `peers` order: its command line and config file."""
    print()
    print("## how each peer ran (the configuration of its first run; ports vary per run)")
    for peer in peers:
        if peer in configs:
            print(f"\n### {peer}\n{configs[peer].rstrip()}")


def parse_scenario(text):
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not CONNECTIONSxSTREAMS")
    return int(match.group(1)), int(match.group(2))


def add_peer_options(parser, peers, tools, results):
    """The options every part of the benchmark takes: which peers, the CPU
    pinning, the results file and the tools' paths."""
    parser.add_argument("--peers", default=",".join(peers), help=f"subset of {','.join(peers)}")
    parser.add_argument("--proxy-cpu", default="0")
    parser.add_argument("--load-cpu", default="1")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--results", default=str(ROOT / "target/bench" / results))
    for tool in tools:
        parser.add_argument(f"--{tool.replace('_', '-')}", dest=tool, required=True)


def peer_options(parser, args, peers, tools):
    """Checks the options of add_peer_options; returns the peers asked for
    and the tools' paths by name."""
    asked = [p for p in args.peers.split(",") if p]
    unknown = set(asked) - set(peers)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; choose from {', '.join(peers)}")
    if args.no_pin:
        args.proxy_cpu = args.load_cpu = None
    elif (os.cpu_count() or 1) < 2:
        parser.error("pinning needs 2 CPUs; use --no-pin on a single-CPU machine")
    return asked, {t: getattr(args, t) for t in tools}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per peer and load (median taken)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first")
    parser.add_argument("--scenarios", default="1x100,8x16",
                        help="comma-separated CONNECTIONSxSTREAMS (default 1x100,8x16)")
    add_peer_options(parser, PEERS, TOOLS, "results.json")
    args = parser.parse_args()
    if args.runs < 1 or args.duration < 1 or args.warmup < 1:
        parser.error("--runs, --duration and --warmup must be at least 1")
    scenarios = [parse_scenario(s) for s in args.scenarios.split(",")]
    peers, tools = peer_options(parser, args, PEERS, TOOLS)
    args.peer_configs = {}
    args.proxy_threads = 1

    runs = []
    with tempfile.TemporaryDirectory(prefix="grpc-balancer-bench-") as workroot:
        workroot = Path(workroot)
        data_file = workroot / "hello.grpc"
        data_file.write_bytes(grpc_frame(hello_request("bench")))
        total = args.runs * len(scenarios) * len(peers)
        done = 0
        for run_index in range(args.runs):
            for scenario in scenarios:
                # Peers alternate within each round so slow drifts of the
                # machine spread over all of them.
                for peer in peers:
                    done += 1
                    log(f"[{done}/{total}] run {run_index + 1}, {scenario[0]}x{scenario[1]}, {peer}")
                    try:
                        run = one_run(peer, scenario, args, tools, data_file, workroot)
                    except BenchError as error:
                        log(f"{peer} failed: {error}")
                        runs.append({"peer": peer, "scenario": f"{scenario[0]}x{scenario[1]}",
                                     "calls_per_s": None, "p50_ms": None, "p99_ms": None,
                                     "cpu_s_per_100k": None, "peak_rss_mib": None,
                                     "backend_ok": {}, "problems": [str(error).splitlines()[0]]})
                        continue
                    runs.append(run)
                    log(f"    {run['calls_per_s']:,.0f} calls/s, p50 {run['p50_ms']:.2f} ms, "
                        f"p99 {run['p99_ms']:.2f} ms, CPU/100k {fmt(run['cpu_s_per_100k'], 2)} s, "
                        f"RSS {fmt(run['peak_rss_mib'])} MiB"
                        + ("" if not run["problems"] else f", PROBLEMS: {run['problems']}"))
    summary = summarize(runs)
    print_report(summary, args)
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    log(f"results written to {results}")
    failed = any(s["problems"] for peers in summary.values() for s in peers.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
