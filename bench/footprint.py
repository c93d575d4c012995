#!/usr/bin/env python3
"""What a sidecar costs when nothing happens, and how fast it starts.

Started by scripts/bench after the load benchmark (see bench/README.md). A
fleet runs one proxy per pod, so its idle cost is paid once per pod: each peer
is configured with BALANCINGS listeners of ENDPOINTS backends each (the same
greeter backends behind every listener), warmed with calls through every
listener so that its upstream connections are open, then left alone and
measured:

  - start-up: process start to every listener accepting (and for
    grpc-balancer, to its admin /ready answering 200; for Envoy, to its admin
    /ready);
  - idle: CPU seconds per minute, wake-ups per second (context switches of all
    its threads) and RSS, over the idle window.

Peers are configured as in the load benchmark (bench/run.py), with one
listener and one upstream group per balancing; grpc-balancer reads a config
file with one balancing per listener and static endpoints.
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from run import (BenchError, Process, add_peer_options, cpu_seconds, envoy_config, free_port,
                 haproxy_config, log, nginx_config, peer_options, pinned)

PEERS = ("grpc-balancer", "haproxy", "envoy", "nginx")
TOOLS = ("proxy", "greeter_server", "greeter_client", "haproxy", "envoy", "nginx")


def proxy_config(frontends):
    balancings = []
    for name, port, backend_ports in frontends:
        endpoints = ", ".join(f"127.0.0.1:{p}" for p in backend_ports)
        balancings.append(f"""  - name: {name}
    listen: 127.0.0.1:{port}
    policy: {{ kind: round_robin }}
    subsets: [{{ name: default, discovery: {{ static: [{endpoints}] }} }}]
""")
    return "balancings:\n" + "".join(balancings)


def start(peer, tools, frontends, workdir, cpu):
    """Starts the peer; returns (Process, admin /ready URL or None, how it runs)."""
    admin = None
    if peer == "grpc-balancer":
        config = workdir / "proxy.yaml"
        config.write_text(proxy_config(frontends))
        admin_port = free_port()
        argv = [tools["proxy"], "--config", str(config), "--admin", f"127.0.0.1:{admin_port}"]
        admin = f"http://127.0.0.1:{admin_port}/ready"
        env = {"GRPC_BALANCER_LOG": "warn"}
    elif peer == "haproxy":
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(frontends))
        argv = [tools["haproxy"], "-db", "-f", str(config)]
        env = {}
    elif peer == "nginx":
        config = workdir / "nginx.conf"
        config.write_text(nginx_config(frontends, workdir))
        argv = [tools["nginx"], "-p", str(workdir), "-c", str(config), "-e", "stderr"]
        env = {}
    elif peer == "envoy":
        config = workdir / "envoy.yaml"
        admin_port = free_port()
        config.write_text(envoy_config(frontends) + f"""admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
""")
        argv = [tools["envoy"], "-c", str(config), "--concurrency", "1", "--disable-hot-restart",
                "--log-level", "error"]
        admin = f"http://127.0.0.1:{admin_port}/ready"
        env = {}
    else:
        raise BenchError(f"unknown peer {peer}")
    return Process(peer, pinned(cpu, argv), workdir, env=env), admin, " ".join(map(str, argv))


def ready(url):
    try:
        with urllib.request.urlopen(url, timeout=0.5) as answer:
            return answer.status == 200
    except OSError:
        return False


def wait_until(what, predicate, process, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            raise BenchError(f"{process.name} exited with {process.popen.returncode}:\n{process.stderr_tail()}")
        if predicate():
            return
        time.sleep(0.002)
    raise BenchError(f"{process.name}: {what} not within {timeout:.0f} s:\n{process.stderr_tail()}")


def accepting(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wakeups(pid):
    """Context switches, voluntary and not, of each thread of the process
    now alive, by thread id."""
    counts = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            counts[task.name] = sum(int(line.split()[1]) for line in
                                    (task / "status").read_text().splitlines()
                                    if "ctxt_switches:" in line)
        except (OSError, ValueError):
            continue
    return counts


def wakeups_between(before, after):
    """The context switches of the threads alive at the end, since the start
    (all of them for a thread started in between). A thread that ended in
    between is left out, with its last switches: summing the totals instead
    would count a thread's exit as minus all it ever did (tokio ends a
    blocking-pool thread after 10 s unused, so one can end in the window)."""
    return sum(count - before.get(tid, 0) for tid, count in after.items())


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def warm(tools, frontends, endpoints, cpu):
    """Calls through every listener, enough for round robin to reach every
    endpoint, and checks they all succeed."""
    for name, port, _ in frontends:
        argv = [tools["greeter_client"], "--target", f"http://127.0.0.1:{port}",
                "--calls", str(2 * endpoints), "--json"]
        out = subprocess.run(pinned(cpu, argv), capture_output=True, text=True, timeout=60)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode != 0 or not lines:
            raise BenchError(f"calls through {name} failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        report = json.loads(lines[-1])
        if report.get("ok") != 2 * endpoints or len(report.get("by_backend", {})) != endpoints:
            raise BenchError(f"calls through {name}: {report}")


def one_run(peer, args, tools, backend_ports, workroot):
    workdir = Path(tempfile.mkdtemp(prefix=f"idle-{peer}-", dir=workroot))
    frontends = [(f"b{i}", free_port(), backend_ports) for i in range(args.balancings)]
    started = time.monotonic()
    process, admin, how = start(peer, tools, frontends, workdir, args.proxy_cpu)
    try:
        for _, port, _ in frontends:
            wait_until(f"listening on {port}", lambda p=port: accepting(p), process)
        listening_ms = (time.monotonic() - started) * 1000
        ready_ms = None
        if admin is not None:
            wait_until("/ready", lambda: ready(admin), process)
            ready_ms = (time.monotonic() - started) * 1000
        warm(tools, frontends, args.endpoints, args.load_cpu)
        # Settle: the warm-up's connections and timers, then the idle window.
        time.sleep(args.settle)
        cpu_before, wake_before = cpu_seconds(process.pid), wakeups(process.pid)
        time.sleep(args.idle)
        cpu_after, wake_after = cpu_seconds(process.pid), wakeups(process.pid)
        rss = rss_mib(process.pid)
    finally:
        process.stop()
    return {
        "peer": peer, "listening_ms": listening_ms, "ready_ms": ready_ms,
        "idle_cpu_s_per_min": (cpu_after - cpu_before) * 60 / args.idle,
        "idle_wakeups_per_s": wakeups_between(wake_before, wake_after) / args.idle,
        "idle_rss_mib": rss, "how": how,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    return "-" if value is None else f"{value:,.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per peer (median taken)")
    parser.add_argument("--balancings", type=int, default=10)
    parser.add_argument("--endpoints", type=int, default=10, help="backends behind each balancing")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the idle window")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after the warm-up calls")
    add_peer_options(parser, PEERS, TOOLS, "footprint.json")
    args = parser.parse_args()
    peers, tools = peer_options(parser, args, PEERS, TOOLS)

    workroot = Path(tempfile.mkdtemp(prefix="grpc-balancer-footprint-"))
    backends = []
    try:
        for i in range(args.endpoints):
            port = free_port()
            argv = [tools["greeter_server"], "--listen", f"127.0.0.1:{port}", "--name", f"backend-{i}"]
            backends.append((Process(f"backend-{i}", pinned(args.load_cpu, argv), workroot,
                                     env={"TOKIO_WORKER_THREADS": "1", "GREETER_LOG": "error"}), port))
        for process, port in backends:
            process.wait_port(port)
        runs = []
        for run in range(args.runs):
            for peer in peers:
                log(f"footprint run {run + 1}/{args.runs}: {peer}, {args.balancings} balancings x "
                    f"{args.endpoints} endpoints, {args.idle:.0f} s idle")
                runs.append(one_run(peer, args, tools, [p for _, p in backends], workroot))
    finally:
        for process, _ in backends:
            process.stop()

    summary = {}
    for peer in peers:
        mine = [r for r in runs if r["peer"] == peer]
        summary[peer] = {key: median([r[key] for r in mine])
                         for key in ("listening_ms", "ready_ms", "idle_cpu_s_per_min",
                                     "idle_wakeups_per_s", "idle_rss_mib")}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))

    print(f"\nIdle cost and start-up, {args.balancings} balancings x {args.endpoints} endpoints "
          f"(medians of {args.runs} runs, {args.idle:.0f} s idle windows):\n")
    print(f"{'peer':<14} {'listening ms':>13} {'ready ms':>9} {'idle CPU s/min':>15} "
          f"{'wake-ups/s':>11} {'idle RSS MiB':>13}")
    for peer, s in summary.items():
        print(f"{peer:<14} {fmt(s['listening_ms']):>13} {fmt(s['ready_ms']):>9} "
              f"{fmt(s['idle_cpu_s_per_min'], 3):>15} {fmt(s['idle_wakeups_per_s'], 2):>11} "
              f"{fmt(s['idle_rss_mib']):>13}")
    ours = summary.get("grpc-balancer")
    if ours:
        print()
        for peer, s in summary.items():
            if peer == "grpc-balancer":
                continue
            parts = []
            for key, label in (("listening_ms", "start-up"), ("idle_cpu_s_per_min", "idle CPU"),
                               ("idle_wakeups_per_s", "wake-ups"), ("idle_rss_mib", "idle RSS")):
                if ours[key] is not None and s[key]:
                    parts.append(f"{label} {ours[key] / s[key]:.2f}x")
            print(f"grpc-balancer vs {peer}: " + ", ".join(parts))
    print(f"\nEvery run: {args.results}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as error:
        print(f"footprint: {error}", file=sys.stderr)
        sys.exit(1)
