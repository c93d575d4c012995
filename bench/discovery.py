#!/usr/bin/env python3
"""How fast proxies learn of endpoint and config changes: push vs DNS.

Started by scripts/measure-discovery on the real node, with the chart
installed. Two client Deployments run the same load client through an
injected proxy: `client-push` follows the operator's discovery stream (the
default), `client-dns` is annotated `grpcbalancer.io/discovery: dns` and
follows the ConfigMap and DNS alone. Both send paced calls the whole time and
report, window by window, each backend's first and last call sent (by the
wall clock, which the host and the pods share). The host watches the pods and
records when each turns Ready or is deleted, so that:

- scale-out: a new greeter pod's Ready to the first call it gets, per client;
- deletion: `kubectl delete pod` to the last new call the pod gets, and the
  calls that failed meanwhile, per client (the pods keep serving for a
  5 s preStop, as production pods do while endpoints propagate);
- config: `kubectl apply` of changed weights to the proxy showing them on its
  `/endpoints`, per client (push vs the ConfigMap through the kubelet);
- the operator scaled to 0 under load: calls failed meanwhile, the DNS
  fallback following a scale-out and a deletion, and the push stream back.
"""

import argparse
import json
import sys
import time

from cluster import (ClientLog, PodWatch, Watch, applied_configs, create_namespace,
                     greeter_balancing, greeter_pod, kubectl, load_client_deployment, log,
                     now_ms, on_dns, on_push, proxy_metrics, set_log_prefix, summary, wait_for)

NS = "discovery-measure"
CLIENTS = ("push", "dns")
RATE = 200  # calls per second per client
WINDOW_MS = 250


class BalancingWatch(Watch):
    """When each generation of the GrpcBalancing `greeter` was seen."""

    def __init__(self):
        self.seen_ms = {}
        super().__init__(NS, "grpcbalancing", "greeter")

    def _event(self, event, at):
        generation = event.get("object", {}).get("metadata", {}).get("generation")
        with self.lock:
            if generation is not None and generation not in self.seen_ms:
                self.seen_ms[generation] = at

    def seen_at(self, generation):
        with self.lock:
            return self.seen_ms.get(generation)


def client_log(client):
    pod = kubectl("-n", NS, "get", "pods", "-l", f"app=client-{client}",
                  "-o", "jsonpath={.items[0].metadata.name}").strip()
    return ClientLog(NS, pod)


def client_deployment(client, tag):
    return load_client_deployment(f"client-{client}", tag, RATE, WINDOW_MS, 7200,
                                  discovery="dns" if client == "dns" else "push")


class Measurement:
    def __init__(self, args):
        self.args = args
        self.tag = args.tag
        self.serial = 0
        self.v1_pods = []
        self.events = []
        self.results = {"scale_out": {c: [] for c in CLIENTS},
                        "deletion": {c: [] for c in CLIENTS},
                        "deletion_failed_calls": {c: 0 for c in CLIENTS},
                        "config": {c: [] for c in CLIENTS},
                        "apply_to_accepted": [],
                        "timeouts": []}

    # --- set-up ---------------------------------------------------------------

    def set_up(self):
        create_namespace(NS)
        self.watch = PodWatch(NS)
        for _ in range(2):
            self.add_pod("v1")
        self.add_pod("v2")
        kubectl("-n", NS, "apply", "-f", "-", stdin=greeter_balancing(75, 25))
        kubectl("-n", NS, "wait", "--for=condition=Ready", "grpcbalancing/greeter",
                "--timeout", "60s", timeout=90)
        self.balancing_watch = BalancingWatch()
        for pod in self.v1_pods + ["greeter-v2-0"]:
            wait_for(f"{pod} Ready", 120, lambda pod=pod: self.watch.ready_at(pod), every=0.1)
        self.event("clients created")
        for client in CLIENTS:
            kubectl("-n", NS, "apply", "-f", "-", stdin=client_deployment(client, self.tag))
        kubectl("-n", NS, "rollout", "status", "deployment/client-push", "deployment/client-dns",
                "--timeout", "180s", timeout=200)
        self.logs = {c: client_log(c) for c in CLIENTS}
        self.client_ip = {}
        for client in CLIENTS:
            self.client_ip[client] = kubectl(
                "-n", NS, "get", "pod", self.logs[client].pod,
                "-o", "jsonpath={.status.podIP}").strip()
        # The push client must really be on the stream, the DNS one not.
        try:
            metrics = wait_for("the push client on the stream", 30,
                               lambda: self.metrics_if("push", on_push), every=0.2)
        except TimeoutError:
            self.diagnose("push")
            raise
        log("client-push: push stream connected, version "
            f"{metrics.get('grpc_balancer_discovery_push_version')}")
        if not on_dns(proxy_metrics(self.client_ip["dns"])):
            self.diagnose("dns")
            raise RuntimeError("client-dns is not on DNS: the annotation was ignored")
        for pod in self.v1_pods:
            for client in CLIENTS:
                wait_for(f"client-{client} calling {pod}", 60,
                         lambda c=client, p=pod: self.logs[c].first_call(p), every=0.1)
        log("both clients call every greeter pod")
        self.event("measuring")

    def diagnose(self, client):
        """What the proxy says of itself, for a failure message."""
        try:
            metrics = proxy_metrics(self.client_ip[client])
            log(f"client-{client} metrics: " + json.dumps(
                {k: v for k, v in metrics.items() if "discovery" in k or "config" in k}))
        except OSError as e:
            log(f"client-{client} metrics: {e}")
        proxy_log = kubectl("-n", NS, "logs", self.logs[client].pod, "-c", "grpc-balancer-proxy",
                            "--tail", "30", check=False)
        log(f"client-{client} proxy log (last 30 lines):\n{proxy_log}")

    def metrics_if(self, client, condition):
        try:
            metrics = proxy_metrics(self.client_ip[client])
        except OSError:
            return None
        return metrics if condition(metrics) else None

    def add_pod(self, version):
        name = f"greeter-{version}-{self.serial}" if version == "v1" else f"greeter-{version}-0"
        if version == "v1":
            self.serial += 1
            self.v1_pods.append(name)
        kubectl("-n", NS, "apply", "-f", "-", stdin=greeter_pod(name, version, self.tag))
        return name

    # --- the measures -----------------------------------------------------------

    def event(self, what):
        self.events.append((now_ms(), what))

    def scale_out(self, label):
        self.event(label)
        pod = self.add_pod("v1")
        ready = wait_for(f"{pod} Ready", 120, lambda: self.watch.ready_at(pod), every=0.02)
        took = {}
        for client in CLIENTS:
            try:
                first = wait_for(f"client-{client}'s first call to {pod}", 90,
                                 lambda c=client: self.logs[c].first_call(pod), every=0.05)
                took[client] = first - ready
            except TimeoutError as e:
                self.results["timeouts"].append(str(e))
                took[client] = None
        log(f"{label}: {pod} Ready → first call: push {took['push']} ms, dns {took['dns']} ms")
        return took

    def delete_oldest(self, label):
        self.event(label)
        pod = self.v1_pods.pop(0)
        kubectl("-n", NS, "delete", "pod", pod, "--wait=false")
        # The deletion as the apiserver accepted it: the watch's first event
        # with a deletionTimestamp (kubectl's own start-up is not counted).
        started = wait_for(f"{pod} deleting", 30, lambda: self.watch.deleting_at(pod), every=0.02)
        wait_for(f"{pod} gone", 90, lambda: self.watch.is_gone(pod), every=0.05)
        # The containers are gone: no call can reach the pod any more. Let the
        # clients report the windows up to now.
        gone = now_ms()
        for client in CLIENTS:
            wait_for(f"client-{client}'s report", 10,
                     lambda c=client: self.logs[c].reported_until() >= gone + WINDOW_MS,
                     every=0.05)
        took, failed = {}, {}
        for client in CLIENTS:
            last = self.logs[client].last_call(pod)
            took[client] = None if last is None else last - started
            _, failed[client], messages = self.logs[client].calls_between(started, gone + WINDOW_MS)
            if messages:
                log(f"  client-{client} failures: {messages}")
        log(f"{label}: delete {pod} → last new call: push {took['push']} ms, "
            f"dns {took['dns']} ms; failed calls: push {failed['push']}, dns {failed['dns']}")
        return took, failed

    def config_change(self, label, v1, v2):
        self.event(label)
        before = {c: applied_configs(proxy_metrics(self.client_ip[c])) for c in CLIENTS}
        started = now_ms()
        generation = int(kubectl("-n", NS, "apply", "-f", "-", "-o",
                                 "jsonpath={.metadata.generation}", stdin=greeter_balancing(v1, v2)))
        accepted = wait_for("the change in the watch", 30,
                            lambda: self.balancing_watch.seen_at(generation))
        self.results["apply_to_accepted"].append(accepted - started)
        applied = {}
        pending = set(CLIENTS)
        deadline = time.monotonic() + self.args.config_timeout
        while pending and time.monotonic() < deadline:
            for client in list(pending):
                try:
                    if applied_configs(proxy_metrics(self.client_ip[client])) > before[client]:
                        applied[client] = now_ms() - accepted
                        pending.discard(client)
                except OSError:
                    pass
            time.sleep(0.02)
        for client in pending:
            self.results["timeouts"].append(
                f"{label}: client-{client} did not apply the weights within "
                f"{self.args.config_timeout} s")
            applied[client] = None
        log(f"{label}: kubectl apply → accepted {accepted - started} ms; accepted → applied: "
            f"push {applied.get('push')} ms, dns {applied.get('dns')} ms")
        return applied

    def operator_absent(self):
        """The operator scaled to 0 under load, then back."""
        release_ns = self.args.release_namespace
        deployment = kubectl("-n", release_ns, "get", "deployments", "-o",
                             "jsonpath={.items[0].metadata.name}").strip()
        replicas = kubectl("-n", release_ns, "get", "deployment", deployment, "-o",
                           "jsonpath={.spec.replicas}").strip()
        started = now_ms()
        kubectl("-n", release_ns, "scale", "deployment", deployment, "--replicas", "0")
        kubectl("-n", release_ns, "wait", "--for=delete", "pod", "--all", "--timeout", "120s",
                timeout=150)

        wait_for("client-push on DNS after the operator left", 60,
                 lambda: self.metrics_if("push", on_dns), every=0.1)
        log("operator at 0 replicas: client-push fell back to DNS")
        added = self.scale_out("operator away, scale-out")
        removed, removed_failed = self.delete_oldest("operator away, deletion")
        kubectl("-n", release_ns, "scale", "deployment", deployment, "--replicas", replicas)
        back = now_ms()
        metrics = wait_for("client-push back on the stream", 120,
                           lambda: self.metrics_if("push", on_push), every=0.1)
        converged = now_ms() - back
        log(f"operator back: client-push on the stream again {converged} ms after the scale-up")
        after = self.scale_out("operator back, scale-out")
        ended = now_ms()
        wait_for("client-push's report", 10,
                 lambda: self.logs["push"].reported_until() >= ended + WINDOW_MS, every=0.05)
        ok, failed, messages = self.logs["push"].calls_between(started, ended + WINDOW_MS)
        return {"calls_ok": ok, "calls_failed": failed, "failure_messages": messages,
                "scale_out_ready_to_first_call_ms": added,
                "deletion_to_last_new_call_ms": removed,
                "deletion_failed_calls": removed_failed,
                "push_reconnected_after_ms": converged,
                "reconnects": metrics.get("grpc_balancer_discovery_push_reconnects_total"),
                "scale_out_after_return_ms": after}

    def run(self):
        self.set_up()
        for i in range(self.args.scale_outs):
            took = self.scale_out(f"scale-out {i + 1}/{self.args.scale_outs}")
            for client in CLIENTS:
                if took[client] is not None:
                    self.results["scale_out"][client].append(took[client])
            if i < self.args.deletions:
                took, failed = self.delete_oldest(f"deletion {i + 1}/{self.args.deletions}")
                for client in CLIENTS:
                    if took[client] is not None:
                        self.results["deletion"][client].append(took[client])
                    self.results["deletion_failed_calls"][client] += failed[client]
        for i in range(self.args.config_changes):
            v1, v2 = (50, 50) if i % 2 == 0 else (75, 25)
            applied = self.config_change(f"config {i + 1}/{self.args.config_changes}", v1, v2)
            for client in CLIENTS:
                if applied[client] is not None:
                    self.results["config"][client].append(applied[client])
        if self.args.show_proxy_log:
            self.diagnose("push")
        if self.args.operator_absence:
            self.results["operator_absent"] = self.operator_absent()
        total = {c: self.logs[c].calls_between(0, now_ms()) for c in CLIENTS}
        self.results["calls"] = {c: {"ok": total[c][0], "failed": total[c][1],
                                     "failure_messages": total[c][2],
                                     "failure_windows": self.logs[c].failure_windows()}
                                 for c in CLIENTS}
        self.results["events"] = self.events

    def report(self):
        r = self.results
        out = {"scale_out_ready_to_first_call": {c: summary(r["scale_out"][c]) for c in CLIENTS},
               "deletion_to_last_new_call": {c: summary(r["deletion"][c]) for c in CLIENTS},
               "deletion_failed_calls": r["deletion_failed_calls"],
               "config_accepted_to_applied": {c: summary(r["config"][c]) for c in CLIENTS},
               "config_kubectl_apply_to_accepted": summary(r["apply_to_accepted"]),
               "raw": {k: r[k] for k in ("scale_out", "deletion", "config")},
               "timeouts": r["timeouts"],
               "calls": r["calls"],
               "events": r["events"]}
        if "operator_absent" in r:
            out["operator_absent"] = r["operator_absent"]
        return out


def print_table(report):
    print()
    print(f"{'measure':<38} {'client':<6} {'n':>3} {'median':>8} {'p99':>8} {'max':>8}")
    for key, title in (("scale_out_ready_to_first_call", "pod Ready → first call (ms)"),
                       ("deletion_to_last_new_call", "pod deleted → last new call (ms)"),
                       ("config_accepted_to_applied", "config accepted → proxy applied (ms)")):
        for client in CLIENTS:
            s = report[key][client]
            if s["n"] == 0:
                print(f"{title:<38} {client:<6} {0:>3}")
                continue
            print(f"{title:<38} {client:<6} {s['n']:>3} {s['median_ms']:>8.0f} "
                  f"{s['p99_ms']:>8.0f} {s['max_ms']:>8.0f}")
    k = report["config_kubectl_apply_to_accepted"]
    if k["n"]:
        print(f"{'kubectl apply → the API accepted it (ms)':<38} {'':<6} {k['n']:>3} "
              f"{k['median_ms']:>8.0f} {k['p99_ms']:>8.0f} {k['max_ms']:>8.0f}")
    print(f"failed calls during deletions: push {report['deletion_failed_calls']['push']}, "
          f"dns {report['deletion_failed_calls']['dns']}")
    for client in CLIENTS:
        c = report["calls"][client]
        print(f"client-{client}: {c['ok']} calls ok, {c['failed']} failed {c['failure_messages'] or ''}")
        for at, messages in c["failure_windows"]:
            before = [what for t, what in report["events"] if t <= at]
            print(f"  failed in the window ending {at} (after: {before[-1] if before else 'start'}):"
                  f" {messages}")
    if "operator_absent" in report:
        a = report["operator_absent"]
        print(f"operator at 0 replicas: client-push {a['calls_ok']} calls ok, "
              f"{a['calls_failed']} failed; back on the stream {a['push_reconnected_after_ms']} ms "
              f"after the scale-up")
    if report["timeouts"]:
        print("timed out:", *report["timeouts"], sep="\n  ")


def main():
    set_log_prefix("measure-discovery")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True, help="the images' tag")
    parser.add_argument("--release-namespace", default="grpc-balancer")
    parser.add_argument("--scale-outs", type=int, default=20)
    parser.add_argument("--deletions", type=int, default=20)
    parser.add_argument("--config-changes", type=int, default=5)
    parser.add_argument("--config-timeout", type=float, default=180.0,
                        help="seconds a proxy may take to apply a config change")
    parser.add_argument("--no-operator-absence", dest="operator_absence", action="store_false")
    parser.add_argument("--out", help="write the report (JSON) here")
    parser.add_argument("--show-proxy-log", action="store_true",
                        help="print client-push's proxy log after the config changes")
    args = parser.parse_args()
    if args.deletions > args.scale_outs:
        parser.error("--deletions may not exceed --scale-outs (each deletion follows a scale-out)")
    m = Measurement(args)
    try:
        m.run()
    finally:
        for thing in [getattr(m, "watch", None), getattr(m, "balancing_watch", None),
                      *getattr(m, "logs", {}).values()]:
            if thing is not None:
                thing.stop()
    report = m.report()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print_table(report)
    return 1 if report["timeouts"] else 0


if __name__ == "__main__":
    sys.exit(main())
