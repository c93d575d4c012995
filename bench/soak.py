#!/usr/bin/env python3
"""A soak: steady load through one proxy while the backends and the config churn.

Started by scripts/soak on the real node, with the chart installed. One
injected client Deployment sends paced calls through its sidecar (the push
stream, as the chart's default) for the whole run, while:

- every --replace-every seconds the oldest greeter pod is replaced: a new pod
  of its version is created, and once it is Ready the old one is deleted
  (with its 5 s preStop, as production pods have);
- every --config-every seconds the GrpcBalancing's weights change
  (75/25 and 50/50 in turn).

Every call is counted by the client (ok, failed, and calls it could not
start because its concurrency was in use), window by window. The proxy's
process is read from the host every --sample-every seconds: its RSS, open
file descriptors and threads from /proc (the container's pid from
containerd), and the tasks alive on its runtime from its own
grpc_balancer_runtime_tasks gauge.

Pass: no failed call, no skipped call, no window missing, the proxy never
restarted, every config change applied by the proxy, and the proxy's RSS,
fds and tasks flat: the median of the last third of the samples at most 10 %
(RSS) or 8 (fds, tasks: a replaced pod's connection lives on through its
preStop) above the median of the first third.
"""

import argparse
import json
import statistics
import sys
import time

from cluster import (ClientLog, Node, PodWatch, applied_configs, create_namespace,
                     greeter_balancing, greeter_pod, kubectl, load_client_deployment, log,
                     now_ms, process_stats, proxy_metrics, set_log_prefix, stop_followers,
                     wait_for)

NS = "soak"
CLIENT = "soak-client"
PROXY = "grpc-balancer-proxy"
WINDOW_MS = 1000
RSS_GROWTH = 0.10
COUNT_GROWTH = 8


class Soak:
    def __init__(self, args):
        self.args = args
        self.node = Node(args.state)
        self.serial = 0
        self.pods = []  # (name, version), oldest first
        self.samples = []
        self.replaced = 0
        self.replace_failures = []
        self.config_changes = 0
        self.events = []  # (Unix ms, what)

    def add_pod(self, version):
        name = f"greeter-{version}-{self.serial}"
        self.serial += 1
        kubectl("-n", NS, "apply", "-f", "-", stdin=greeter_pod(name, version, self.args.tag))
        self.pods.append((name, version))
        return name

    def set_up(self):
        create_namespace(NS)
        self.watch = PodWatch(NS)
        self.client_watch = PodWatch(NS, f"app={CLIENT}")
        for version in ("v1", "v1", "v2"):
            self.add_pod(version)
        kubectl("-n", NS, "apply", "-f", "-", stdin=greeter_balancing(75, 25))
        kubectl("-n", NS, "wait", "--for=condition=Ready", "grpcbalancing/greeter",
                "--timeout", "60s", timeout=90)
        for name, _ in self.pods:
            wait_for(f"{name} Ready", 120, lambda n=name: self.watch.ready_at(n), every=0.1)
        # The client runs a little longer than the soak; the soak ends first.
        duration_s = int(self.args.minutes * 60) + 300
        kubectl("-n", NS, "apply", "-f", "-", stdin=load_client_deployment(
            CLIENT, self.args.tag, self.args.rate, WINDOW_MS, duration_s, concurrency=256))
        kubectl("-n", NS, "rollout", "status", f"deployment/{CLIENT}", "--timeout", "180s",
                timeout=200)
        self.client_pod = kubectl("-n", NS, "get", "pods", "-l", f"app={CLIENT}", "-o",
                                  "jsonpath={.items[0].metadata.name}").strip()
        self.client_ip = wait_for("the client pod's IP", 30,
                                  lambda: self.client_watch.ip_of(self.client_pod))
        self.proxy_container = wait_for(
            "the proxy container", 30,
            lambda: self.client_watch.container(self.client_pod, PROXY))
        self.proxy_pid = wait_for("the proxy's pid", 30,
                                  lambda: self.node.pid(self.proxy_container[0]), every=0.5)
        log(f"client pod {self.client_pod}, proxy pid {self.proxy_pid} on the host")
        self.log = ClientLog(NS, self.client_pod)
        try:
            for name, _ in self.pods:
                wait_for(f"the client calling {name}", 60,
                         lambda n=name: self.log.first_call(n), every=0.1)
        except TimeoutError:
            self.diagnose()
            raise
        log("the client calls every greeter pod")

    def diagnose(self):
        """What the client and its proxy said last, for a failure message."""
        for container in ("client", PROXY):
            text = kubectl("-n", NS, "logs", self.client_pod, "-c", container, "--tail", "20",
                           check=False)
            log(f"{self.client_pod} {container} (last 20 lines):\n{text}")

    def replace_oldest(self):
        old, version = self.pods.pop(0)
        new = self.add_pod(version)
        try:
            wait_for(f"{new} Ready", 60, lambda: self.watch.ready_at(new), every=0.05)
        except TimeoutError as e:
            self.replace_failures.append(str(e))
            log(str(e))
        kubectl("-n", NS, "delete", "pod", old, "--wait=false")
        self.events.append((now_ms(), f"{new} Ready, {old} deleted"))
        self.replaced += 1

    def change_config(self):
        self.config_changes += 1
        v1, v2 = (50, 50) if self.config_changes % 2 else (75, 25)
        kubectl("-n", NS, "apply", "-f", "-", stdin=greeter_balancing(v1, v2))
        self.events.append((now_ms(), f"weights {v1}/{v2} applied"))

    def sample(self, elapsed_s):
        container = self.client_watch.container(self.client_pod, PROXY)
        s = {"elapsed_s": round(elapsed_s, 1),
             "proxy_restarts": container[1] if container else None}
        try:
            s.update(process_stats(self.proxy_pid))
        except OSError as e:
            s["error"] = f"/proc/{self.proxy_pid}: {e}"
        try:
            m = proxy_metrics(self.client_ip)
            s["tasks"] = int(m.get("grpc_balancer_runtime_tasks", -1))
            s["configs_applied"] = int(applied_configs(m))
        except OSError as e:
            s["error"] = f"metrics: {e}"
        c = self.log.counts_between(0, now_ms())
        s.update(ok=c["ok"], failed=c["failed"], skipped=c["skipped"])
        self.samples.append(s)
        return s

    def run(self):
        self.set_up()
        print(f"{'min':>5} {'calls ok':>10} {'failed':>7} {'skipped':>8} {'RSS MiB':>8} "
              f"{'fds':>5} {'threads':>7} {'tasks':>6} {'replaced':>9} {'configs':>8}",
              flush=True)
        applied_before = applied_configs(proxy_metrics(self.client_ip))
        start = time.monotonic()
        self.started_ms = now_ms()
        end = start + self.args.minutes * 60
        next_replace = start + self.args.replace_every
        next_config = start + self.args.config_every
        next_sample = start
        next_print = start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now >= next_sample:
                s = self.sample(now - start)
                next_sample += self.args.sample_every
                if now >= next_print:
                    next_print += 60
                    rss = s.get("rss_kib")
                    print(f"{s['elapsed_s'] / 60:>5.1f} {s['ok']:>10} {s['failed']:>7} "
                          f"{s['skipped']:>8} {rss / 1024 if rss else 0:>8.1f} "
                          f"{s.get('fds', -1):>5} {s.get('threads', -1):>7} "
                          f"{s.get('tasks', -1):>6} {self.replaced:>9} "
                          f"{self.config_changes:>8}", flush=True)
            if now >= next_replace:
                self.replace_oldest()
                next_replace += self.args.replace_every
            if now >= next_config:
                self.change_config()
                next_config += self.args.config_every
            time.sleep(0.05)
        self.sample(time.monotonic() - start)
        self.ended_ms = now_ms()
        self.log.wait_reported(self.ended_ms + WINDOW_MS, seconds=15)
        # The last change reaches the proxy within its push latency (tens of
        # ms); give it a few seconds before counting what it applied.
        try:
            wait_for("the proxy applying every config change", 30,
                     lambda: applied_configs(proxy_metrics(self.client_ip))
                     >= applied_before + self.config_changes, every=0.5)
        except TimeoutError:
            pass
        self.configs_applied = int(applied_configs(proxy_metrics(self.client_ip))
                                   - applied_before)

    def report(self):
        calls = self.log.counts_between(0, self.ended_ms + WINDOW_MS)
        during = self.log.counts_between(self.started_ms, self.ended_ms + WINDOW_MS)
        expected_windows = (self.ended_ms + WINDOW_MS - self.started_ms) // WINDOW_MS
        good = [s for s in self.samples if "error" not in s]
        third = max(1, len(good) // 3)

        def trend(key):
            values = [s[key] for s in good if s.get(key) is not None]
            if not values:
                return {}
            first = statistics.median(values[:third])
            last = statistics.median(values[-third:])
            return {"start": values[0], "peak": max(values), "end": values[-1],
                    "first_third_median": first, "last_third_median": last}

        # Windows with a failed or a skipped call, and what happened just before.
        anomalies = []
        with self.log.lock:
            windows = list(self.log.windows)
        for at, _, failed, messages, skipped, _, _ in windows:
            if failed or skipped:
                before = [what for t, what in self.events if t <= at]
                anomalies.append({"window_end_ms": at, "failed": failed, "skipped": skipped,
                                  "failure_messages": messages,
                                  "after": before[-1] if before else "start",
                                  "ms_after": at - max((t for t, _ in self.events if t <= at),
                                                       default=self.started_ms)})
        rss, fds, tasks, threads = (trend(k) for k in ("rss_kib", "fds", "tasks", "threads"))
        restarts = max((s["proxy_restarts"] or 0) for s in self.samples)
        checks = {
            "no failed call": calls["failed"] == 0,
            "no skipped call": calls["skipped"] == 0,
            "no window missing": during["windows"] >= expected_windows - 1,
            "the proxy never restarted": restarts == 0,
            "every backend replacement Ready": not self.replace_failures,
            "every config change applied": self.configs_applied >= self.config_changes,
            "RSS flat": bool(rss) and rss["last_third_median"]
            <= rss["first_third_median"] * (1 + RSS_GROWTH),
            "fds flat": bool(fds) and fds["last_third_median"]
            <= fds["first_third_median"] + COUNT_GROWTH,
            "tasks flat": bool(tasks) and tasks["last_third_median"]
            <= tasks["first_third_median"] + COUNT_GROWTH,
            "no sample failed": len(good) == len(self.samples),
        }
        return {"minutes": self.args.minutes, "rate": self.args.rate,
                "calls": calls, "calls_during_soak": during,
                "windows_expected": expected_windows,
                "backends_replaced": self.replaced, "replace_failures": self.replace_failures,
                "config_changes": self.config_changes, "configs_applied": self.configs_applied,
                "proxy_restarts": restarts,
                "rss_kib": rss, "fds": fds, "tasks": tasks, "threads": threads,
                "slowest_windows": [
                    {"window_end_ms": at, "max_latency_ms": ms,
                     "after": ([what for t, what in self.events if t <= at] or ["start"])[-1],
                     "ms_after": at - max((t for t, _ in self.events if t <= at),
                                          default=self.started_ms)}
                    for at, ms in self.log.slowest_windows(self.started_ms,
                                                           self.ended_ms + WINDOW_MS, 5)],
                "samples": self.samples, "anomalies": anomalies, "events": self.events,
                "checks": checks,
                "passed": all(checks.values())}


def print_report(r):
    c = r["calls"]
    print()
    print(f"soak of {r['minutes']} min at {r['rate']} calls/s through one proxy: "
          f"{c['ok']} calls ok, {c['failed']} failed, {c['skipped']} not started "
          f"{c['failure_messages'] or ''}")
    print(f"  {r['backends_replaced']} backend pods replaced, {r['config_changes']} config "
          f"changes ({r['configs_applied']} applied by the proxy), proxy restarts: "
          f"{r['proxy_restarts']}")
    for key, title, scale in (("rss_kib", "RSS MiB", 1024), ("fds", "open fds", 1),
                              ("tasks", "runtime tasks", 1), ("threads", "threads", 1)):
        t = r[key]
        if t:
            print(f"  {title:<14} start {t['start'] / scale:>7.1f}  peak {t['peak'] / scale:>7.1f}"
                  f"  end {t['end'] / scale:>7.1f}  (median first third "
                  f"{t['first_third_median'] / scale:.1f}, last third "
                  f"{t['last_third_median'] / scale:.1f})")
    print(f"  longest call: {c['max_latency_ms']} ms; the slowest windows:")
    for w in r["slowest_windows"]:
        print(f"    window ending {w['window_end_ms']}: {w['max_latency_ms']} ms "
              f"({w['ms_after']} ms after: {w['after']})")
    for a in r["anomalies"]:
        print(f"  window ending {a['window_end_ms']}: {a['failed']} failed, {a['skipped']} not "
              f"started {a['failure_messages'] or ''} ({a['ms_after']} ms after: {a['after']})")
    for name, ok in r["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print("soak:", "PASS" if r["passed"] else "FAIL")


def main():
    set_log_prefix("soak")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True, help="the images' tag")
    parser.add_argument("--state", required=True, help="the node's state directory")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=200, help="calls per second")
    parser.add_argument("--replace-every", type=float, default=10, help="seconds")
    parser.add_argument("--config-every", type=float, default=60, help="seconds")
    parser.add_argument("--sample-every", type=float, default=10, help="seconds")
    parser.add_argument("--out", help="write the report (JSON) here")
    args = parser.parse_args()
    soak = Soak(args)
    try:
        soak.run()
    finally:
        stop_followers(soak)
    report = soak.report()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print_report(report)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
