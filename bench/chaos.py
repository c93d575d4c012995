#!/usr/bin/env python3
"""Chaos on the real node under steady load, counting every call.

Started by scripts/chaos on the real node, with the chart installed
(`proxy.adminDebug=any`, so the host can read each proxy's /endpoints). One
injected client Deployment sends paced calls through its sidecar the whole
time (the load client: every call's outcome, window by window) to a greeter
Deployment whose pods answer after a short delay, so that each pod has calls
in flight at any moment. The scenarios run in turn; each prints the calls ok
and failed while it ran and whether it meets its bar:

- sigkill-backend: a greeter pod's process is SIGKILLed from the host (as
  the kernel's OOM killer does), several times. Bar: failed calls no more
  than the calls the proxy had on that pod at that moment: those in flight
  (read from its /endpoints just before the kill; the gap is printed) plus
  those it started on the pod after that read and before it saw the
  connection end (the endpoint's cumulative callsStarted).
- rollout-backends, rollout-operator: `kubectl rollout restart` of the
  greeter Deployment, then of the operator. Bar: 0 failed.
- blackout: the operator scaled to 0, CoreDNS scaled to 0 and the proxy
  ConfigMap deleted, for --blackout-s seconds (past the kubelet's refresh of
  the mounted ConfigMap). Bar: 0 failed, and every backend pod keeps being
  called (the proxy serves on its last good view); then everything back and
  the proxy on the push stream again.
- webhook-ignore: the operator scaled to 0 with failurePolicy Ignore; an
  annotated pod is created. Bar: admitted without the proxy, and listed in
  the GrpcBalancing's status.podsWithoutProxy once the operator is back.
- webhook-fail: `helm upgrade --set webhook.failurePolicy=Fail`, the operator
  scaled to 0; an annotated pod is created. Bar: refused, the message names
  the webhook and why, and no pod was created.
- sidecar-kill: the client pod's proxy process is SIGKILLed from the host.
  Bar: the kubelet restarts it (restartCount + 1) and the app's calls
  recover within --recover-s; the calls failed meanwhile are reported.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback

from cluster import (ClientLog, Node, PodWatch, create_namespace, calls_by_address, kubectl,
                     kubectl_result, load_client_deployment, log, now_ms, on_push,
                     proxy_endpoints, proxy_metrics, set_log_prefix, stop_followers, wait_for)

NS = "chaos"
CLIENT = "chaos-client"
PROXY = "grpc-balancer-proxy"
WINDOW_MS = 250
SCENARIOS = ("sigkill-backend", "rollout-backends", "rollout-operator", "blackout",
             "webhook-ignore", "webhook-fail", "sidecar-kill")


def greeter_deployment(tag, replicas, delay_ms):
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: greeter}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: greeter}}}}
  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}}}
  template:
    metadata:
      labels: {{app: greeter}}
    spec:
      terminationGracePeriodSeconds: 20
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: greeter
        image: localhost/grpc-balancer-greeter:{tag}
        imagePullPolicy: Never
        args: ["--listen", "0.0.0.0:50051", "--name", "$(POD_NAME)", "--delay-ms", "{delay_ms}"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports: [{{containerPort: 50051, name: grpc}}]
        readinessProbe:
          grpc: {{port: 50051}}
          periodSeconds: 1
        lifecycle:
          preStop: {{sleep: {{seconds: 5}}}}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL]}}
          readOnlyRootFilesystem: true
"""


BALANCING = """
apiVersion: grpcbalancer.io/v1alpha1
kind: GrpcBalancing
metadata: {name: greeter}
spec:
  selector: {app: greeter}
  port: 50051
  listenerPort: 15001
  policy: {kind: round_robin}
"""


def annotated_pod(name, tag):
    """A pod asking for the proxy, whose app does nothing but exist."""
    return f"""
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{grpcbalancer.io/sidecar.inject: "true"}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: app
    image: localhost/grpc-balancer-greeter:{tag}
    imagePullPolicy: Never
    args: ["--listen", "0.0.0.0:50051", "--name", "{name}"]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
      readOnlyRootFilesystem: true
"""


class Chaos:
    def __init__(self, args):
        self.args = args
        self.node = Node(args.state)
        self.release_ns = args.release_namespace
        self.results = []

    # --- set-up -----------------------------------------------------------------

    def set_up(self):
        create_namespace(NS)
        self.watch = PodWatch(NS)
        self.client_watch = PodWatch(NS, f"app={CLIENT}")
        kubectl("-n", NS, "apply", "-f", "-", stdin=BALANCING)
        kubectl("-n", NS, "apply", "-f", "-",
                stdin=greeter_deployment(self.args.tag, self.args.backends, self.args.delay_ms))
        kubectl("-n", NS, "rollout", "status", "deployment/greeter", "--timeout", "180s",
                timeout=200)
        kubectl("-n", NS, "wait", "--for=condition=Ready", "grpcbalancing/greeter",
                "--timeout", "60s", timeout=90)
        kubectl("-n", NS, "apply", "-f", "-", stdin=load_client_deployment(
            CLIENT, self.args.tag, self.args.rate, WINDOW_MS, 7200, concurrency=256))
        kubectl("-n", NS, "rollout", "status", f"deployment/{CLIENT}", "--timeout", "180s",
                timeout=200)
        self.client_pod = kubectl("-n", NS, "get", "pods", "-l", f"app={CLIENT}", "-o",
                                  "jsonpath={.items[0].metadata.name}").strip()
        self.client_ip = wait_for("the client pod's IP", 30,
                                  lambda: self.client_watch.ip_of(self.client_pod))
        self.log = ClientLog(NS, self.client_pod)
        wait_for("the client on the push stream", 60,
                 lambda: self.metrics_if(on_push), every=0.2)
        for pod in self.backend_pods():
            wait_for(f"the client calling {pod}", 60, lambda p=pod: self.log.first_call(p),
                     every=0.1)
        self.operator = kubectl("-n", self.release_ns, "get", "deployments", "-o",
                                "jsonpath={.items[0].metadata.name}").strip()
        self.operator_replicas = kubectl("-n", self.release_ns, "get", "deployment",
                                         self.operator, "-o",
                                         "jsonpath={.spec.replicas}").strip()
        log(f"the client calls all {len(self.backend_pods())} greeter pods through its proxy")

    def metrics_if(self, condition):
        try:
            metrics = proxy_metrics(self.client_ip)
        except OSError:
            return None
        return metrics if condition(metrics) else None

    def backend_pods(self):
        """Names of the greeter pods that are Ready and not being deleted."""
        out = kubectl("-n", NS, "get", "pods", "-l", "app=greeter", "-o", "json")
        pods = []
        for p in json.loads(out)["items"]:
            if p["metadata"].get("deletionTimestamp"):
                continue
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in p.get("status", {}).get("conditions", [])):
                pods.append(p["metadata"]["name"])
        return sorted(pods)

    def scale(self, ns, deployment, replicas, selector):
        kubectl("-n", ns, "scale", "deployment", deployment, "--replicas", str(replicas))
        if int(replicas) == 0:
            kubectl("-n", ns, "wait", "--for=delete", "pod", "-l", selector, "--timeout", "120s",
                    timeout=150)
        else:
            kubectl("-n", ns, "rollout", "status", f"deployment/{deployment}", "--timeout",
                    "180s", timeout=200)

    def operator_selector(self):
        labels = json.loads(kubectl("-n", self.release_ns, "get", "deployment", self.operator,
                                    "-o", "jsonpath={.spec.selector.matchLabels}"))
        return ",".join(f"{k}={v}" for k, v in labels.items())

    def settle(self, started_ms):
        """The client's windows up to now; the calls since `started_ms`."""
        ended = now_ms()
        self.log.wait_reported(ended + WINDOW_MS, seconds=15)
        return self.log.counts_between(started_ms, ended + WINDOW_MS)

    def record(self, name, counts, bar, passed, **figures):
        result = {"scenario": name, "ok": counts["ok"], "failed": counts["failed"],
                  "skipped": counts["skipped"], "failure_messages": counts["failure_messages"],
                  "max_latency_ms": counts["max_latency_ms"],
                  "bar": bar, "passed": bool(passed), **figures}
        self.results.append(result)
        log(f"{name}: {counts['ok']} ok, {counts['failed']} failed "
            f"{counts['failure_messages'] or ''} {figures or ''} -> "
            f"{'PASS' if passed else 'FAIL'} ({bar})")

    # --- the scenarios ------------------------------------------------------------

    def sigkill_backend(self):
        started = now_ms()
        kills = []
        for i in range(self.args.kills):
            pods = self.backend_pods()
            pod = pods[i % len(pods)]
            ip = self.watch.ip_of(pod)
            cid, restarts, _ = wait_for(f"{pod}'s greeter container", 10,
                                        lambda: self.watch.container(pod, "greeter"))
            pid = self.node.pid(cid)
            if pid is None:
                raise RuntimeError(f"{pod}: no running greeter container {cid}")
            # The moment: what the proxy has in flight on the pod, read just
            # before the kill, then read again and again until the proxy has
            # seen the connection end (nothing in flight, not ready). A call
            # the proxy sends in the instant between the kill and its
            # noticing is on the pod too, however short its life: the
            # endpoint's cumulative callsStarted counts those, so the bound
            # is the calls in flight at the first read plus every call
            # started after it until the proxy noticed.
            address = f"{ip}:50051"
            read_at = time.monotonic()
            first = calls_by_address(proxy_endpoints(self.client_ip)).get(address)
            if first is None:
                raise RuntimeError(f"{address} is not among the client proxy's endpoints")
            killed_at_ms = now_ms()
            os.kill(pid, signal.SIGKILL)
            gap_ms = (time.monotonic() - read_at) * 1000
            after = []
            last = first
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                seen = calls_by_address(proxy_endpoints(self.client_ip)).get(address)
                if seen is None:
                    break  # discovery took it out: no call can start on it
                last = seen
                after.append(last["inFlight"])
                if last["inFlight"] == 0 and not last["ready"]:
                    break
            before = first["inFlight"]
            started_since = max(0, last["callsStarted"] - first["callsStarted"])
            in_flight = before + started_since
            wait_for(f"{pod}'s greeter restarted by the kubelet", 60,
                     lambda: (self.watch.container(pod, "greeter") or ("", 0, False))[1]
                     > restarts, every=0.1)
            wait_for(f"{pod} Ready again", 60,
                     lambda: (self.watch.container(pod, "greeter") or ("", 0, False))[2],
                     every=0.1)
            wait_for(f"the client calling {pod} again", 60,
                     lambda: (self.log.last_call(pod) or 0) > killed_at_ms, every=0.1)
            back_ms = self.log.last_call(pod) - killed_at_ms
            window = self.settle(killed_at_ms - WINDOW_MS)
            kills.append({"pod": pod, "in_flight": in_flight, "in_flight_before_kill": before,
                          "started_after_read": started_since,
                          "read_to_kill_ms": round(gap_ms, 2), "in_flight_after_kill": after,
                          "failed": window["failed"], "failure_messages":
                          window["failure_messages"], "called_again_after_ms": back_ms})
            log(f"  SIGKILL {pod} (pid {pid}): {in_flight} calls on it ({before} in flight "
                f"{gap_ms:.1f} ms before the kill, {started_since} started after, in flight "
                f"then {after}), {window['failed']} "
                f"failed, called again {back_ms} ms later")
            time.sleep(2)
        counts = self.settle(started)
        in_flight = sum(k["in_flight"] for k in kills)
        self.record("sigkill-backend", counts,
                    "failed <= calls on the killed pod (in flight, or sent before the proxy saw it die)",
                    counts["failed"] <= in_flight
                    and all(k["failed"] <= k["in_flight"] for k in kills),
                    in_flight_at_kills=in_flight, kills=kills)

    def rollout_backends(self):
        before = set(self.backend_pods())
        started = now_ms()
        kubectl("-n", NS, "rollout", "restart", "deployment/greeter")
        kubectl("-n", NS, "rollout", "status", "deployment/greeter", "--timeout", "300s",
                timeout=320)
        after = set(wait_for("the old pods gone", 60,
                             lambda: (lambda p: p if not p & before else None)(
                                 set(self.backend_pods()))))
        for pod in after:
            wait_for(f"the client calling {pod}", 60, lambda p=pod: self.log.first_call(p),
                     every=0.1)
        counts = self.settle(started)
        self.record("rollout-backends", counts, "0 failed", counts["failed"] == 0,
                    pods_replaced=len(before))

    def rollout_operator(self):
        started = now_ms()
        reconnects = proxy_metrics(self.client_ip).get(
            "grpc_balancer_discovery_push_reconnects_total", 0)
        kubectl("-n", self.release_ns, "rollout", "restart", f"deployment/{self.operator}")
        kubectl("-n", self.release_ns, "rollout", "status", f"deployment/{self.operator}",
                "--timeout", "300s", timeout=320)
        m = wait_for("the client on the push stream again", 60,
                     lambda: self.metrics_if(on_push), every=0.2)
        counts = self.settle(started)
        self.record("rollout-operator", counts, "0 failed", counts["failed"] == 0,
                    push_reconnects=m.get("grpc_balancer_discovery_push_reconnects_total", 0)
                    - reconnects)

    def blackout(self):
        pods = self.backend_pods()
        started = now_ms()
        selector = self.operator_selector()
        self.scale(self.release_ns, self.operator, 0, selector)
        self.scale("kube-system", "coredns", 0, "k8s-app=kube-dns")
        kubectl("-n", NS, "delete", "configmap", "grpc-balancer-proxy-config")
        dark_from = now_ms()
        log(f"  operator, CoreDNS and the proxy ConfigMap gone; holding {self.args.blackout_s} s")
        time.sleep(self.args.blackout_s)
        dark_until = now_ms()
        self.log.wait_reported(dark_until + WINDOW_MS)
        dark = self.log.counts_between(dark_from, dark_until)
        # The last 30 s of the blackout: every pod still called.
        late = self.log.counts_between(dark_until - 30_000, dark_until)
        served = sorted(p for p in pods if late["by_backend"].get(p, 0) > 0)
        m = proxy_metrics(self.client_ip)
        reloads = {k.split('"')[1]: v for k, v in m.items()
                   if k.startswith("grpc_balancer_config_reloads_total{")}
        self.scale("kube-system", "coredns", 1, "k8s-app=kube-dns")
        self.scale(self.release_ns, self.operator, self.operator_replicas, selector)
        wait_for("the proxy ConfigMap recreated", 60,
                 lambda: kubectl("-n", NS, "get", "configmap", "grpc-balancer-proxy-config",
                                 check=False), every=0.5)
        wait_for("the client on the push stream again", 120,
                 lambda: self.metrics_if(on_push), every=0.2)
        counts = self.settle(started)
        self.record("blackout", counts,
                    "0 failed, every backend pod called through the blackout",
                    counts["failed"] == 0 and served == pods,
                    blackout_s=self.args.blackout_s, calls_during_blackout=dark["ok"],
                    pods=len(pods), pods_called_in_last_30s=len(served),
                    config_reloads=reloads)

    def webhook_ignore(self):
        started = now_ms()
        selector = self.operator_selector()
        self.scale(self.release_ns, self.operator, 0, selector)
        name = "annotated-while-webhook-down"
        code, _, err = kubectl_result("-n", NS, "apply", "-f", "-",
                                      stdin=annotated_pod(name, self.args.tag))
        admitted = code == 0
        containers = kubectl("-n", NS, "get", "pod", name, "-o",
                             "jsonpath={.spec.initContainers[*].name} {.spec.containers[*].name}",
                             check=False).split() if admitted else []
        self.scale(self.release_ns, self.operator, self.operator_replicas, selector)
        listed = False
        try:
            listed = wait_for("the pod in status.podsWithoutProxy", 60, lambda: name in kubectl(
                "-n", NS, "get", "grpcbalancing", "greeter", "-o",
                "jsonpath={.status.podsWithoutProxy}", check=False), every=0.5)
        except TimeoutError as e:
            log(f"  {e}")
        kubectl("-n", NS, "delete", "pod", name, "--wait=false", check=False)
        counts = self.settle(started)
        self.record("webhook-ignore", counts,
                    "pod admitted without the proxy and listed in status.podsWithoutProxy",
                    admitted and PROXY not in containers and listed,
                    admitted=admitted, containers=containers, listed_in_status=bool(listed),
                    error=err.strip() if not admitted else "")

    def webhook_fail(self):
        started = now_ms()
        selector = self.operator_selector()
        upgraded, out = helm_upgrade(self.release_ns, "webhook.failurePolicy=Fail")
        if not upgraded:
            raise RuntimeError(f"helm upgrade: {out}")
        self.scale(self.release_ns, self.operator, 0, selector)
        name = "annotated-while-webhook-fails"
        code, _, err = kubectl_result("-n", NS, "apply", "-f", "-",
                                      stdin=annotated_pod(name, self.args.tag))
        message = err.strip()
        exists = kubectl_result("-n", NS, "get", "pod", name)[0] == 0
        # The apiserver's refusal names the webhook and says why it failed.
        clear = ('failed calling webhook "sidecar-injector.grpcbalancer.io"' in message
                 and "grpc-balancer" in message)
        helm_upgrade(self.release_ns, "webhook.failurePolicy=Ignore")
        self.scale(self.release_ns, self.operator, self.operator_replicas, selector)
        wait_for("the client on the push stream again", 120,
                 lambda: self.metrics_if(on_push), every=0.2)
        counts = self.settle(started)
        self.record("webhook-fail", counts,
                    "creation refused with a message naming the webhook; no pod created",
                    code != 0 and clear and not exists,
                    refused=code != 0, message=message, pod_exists=exists)

    def sidecar_kill(self):
        started = now_ms()
        cid, restarts, _ = wait_for("the proxy container", 10,
                                    lambda: self.client_watch.container(self.client_pod, PROXY))
        pid = self.node.pid(cid)
        if pid is None:
            raise RuntimeError(f"{self.client_pod}: no running proxy container {cid}")
        killed_at = now_ms()
        os.kill(pid, signal.SIGKILL)
        restarted = False
        try:
            wait_for("the proxy restarted by the kubelet", self.args.recover_s,
                     lambda: (self.client_watch.container(self.client_pod, PROXY)
                              or ("", 0, False))[1] > restarts, every=0.1)
            restarted = True
        except TimeoutError as e:
            log(f"  {e}")
        recovered_after = None
        try:
            # Recovered: a whole window of calls answered, none failed.
            def clean_window():
                for at, ok, failed, _, _, _, _ in list(self.log.windows):
                    if at > killed_at + WINDOW_MS and ok > 0 and failed == 0:
                        return at
                return None
            recovered_after = wait_for("the app's calls answered again", self.args.recover_s,
                                       clean_window, every=0.1) - killed_at
        except TimeoutError as e:
            log(f"  {e}")
        time.sleep(3)
        counts = self.settle(started)
        self.record("sidecar-kill", counts,
                    f"the kubelet restarts the proxy and calls recover within "
                    f"{self.args.recover_s} s (failed calls reported)",
                    restarted and recovered_after is not None,
                    restarted=restarted, recovered_after_ms=recovered_after)

    def run(self):
        self.set_up()
        chosen = self.args.scenarios.split(",") if self.args.scenarios else SCENARIOS
        for name in chosen:
            log(f"scenario {name}")
            try:
                getattr(self, name.replace("-", "_"))()
            except Exception as e:  # one scenario's trouble is reported, the next runs
                log(f"{name}: could not run: {e!r}\n{traceback.format_exc()}")
                self.results.append({"scenario": name, "passed": False, "error": str(e),
                                     "ok": 0, "failed": 0, "skipped": 0, "bar": ""})
        self.total = self.log.counts_between(0, now_ms())


def helm_upgrade(ns, setting):
    """`helm upgrade` of the release with one value changed; (ok, stderr)."""
    proc = subprocess.run(["helm", "upgrade", "grpc-balancer", "charts/grpc-balancer",
                           "--namespace", ns, "--reuse-values", "--set", setting,
                           "--wait", "--timeout", "180s"],
                          capture_output=True, text=True, timeout=240)
    return proc.returncode == 0, proc.stderr.strip()


def print_report(results, total):
    print()
    print(f"{'scenario':<18} {'calls ok':>9} {'failed':>7}  {'result':<6} bar / figures")
    for r in results:
        extra = {k: v for k, v in r.items() if k not in (
            "scenario", "ok", "failed", "skipped", "bar", "passed", "failure_messages", "kills")}
        print(f"{r['scenario']:<18} {r['ok']:>9} {r['failed']:>7}  "
              f"{'PASS' if r['passed'] else 'FAIL':<6} {r['bar']}")
        if r.get("failure_messages"):
            print(f"{'':<38} failures: {r['failure_messages']}")
        for k in r.get("kills", []):
            print(f"{'':<38} SIGKILL {k['pod']}: {k['in_flight']} on it "
                  f"({k['in_flight_before_kill']} in flight {k['read_to_kill_ms']} ms before "
                  f"the kill, {k['started_after_read']} started after, in flight then "
                  f"{k['in_flight_after_kill']}), {k['failed']} failed")
        if extra:
            print(f"{'':<38} {json.dumps(extra)}")
    print(f"all scenarios: {total['ok']} calls ok, {total['failed']} failed, "
          f"{total['skipped']} not started")
    passed = all(r["passed"] for r in results)
    print("chaos:", "PASS" if passed else "FAIL")
    return passed


def main():
    set_log_prefix("chaos")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", required=True, help="the images' tag")
    parser.add_argument("--state", required=True, help="the node's state directory")
    parser.add_argument("--release-namespace", default="grpc-balancer")
    parser.add_argument("--scenarios", help=f"comma-separated, of {','.join(SCENARIOS)}")
    parser.add_argument("--rate", type=int, default=200, help="calls per second")
    parser.add_argument("--backends", type=int, default=3)
    parser.add_argument("--delay-ms", type=int, default=50,
                        help="each greeter call's delay: calls in flight on every pod")
    parser.add_argument("--kills", type=int, default=3, help="backend SIGKILLs")
    parser.add_argument("--blackout-s", type=int, default=90,
                        help="how long the operator, CoreDNS and the ConfigMap stay away")
    parser.add_argument("--recover-s", type=int, default=60)
    parser.add_argument("--out", help="write the report (JSON) here")
    args = parser.parse_args()
    if args.scenarios:
        unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    chaos = Chaos(args)
    try:
        chaos.run()
    finally:
        stop_followers(chaos)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"results": chaos.results, "total": chaos.total}, f, indent=2)
    return 0 if print_report(chaos.results, chaos.total) else 1


if __name__ == "__main__":
    sys.exit(main())
