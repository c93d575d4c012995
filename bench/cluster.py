"""The pieces the real-node measurements share: kubectl, polling with a
deadline, watches of pods and objects, the paced load clients' reports, the
greeter pods and the proxy's admin port, and the node's containers.

bench/discovery.py, bench/chaos.py and bench/soak.py run on the real node
after their script (scripts/measure-discovery, scripts/chaos, scripts/soak)
brought it up and helm-installed the chart. Times are Unix milliseconds of
the one machine's clock, which the host and the pods share.
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

PRESTOP_S = 5
ADMIN_PORT = 9901

_log_prefix = "node"


def set_log_prefix(prefix):
    global _log_prefix
    _log_prefix = prefix


def log(msg):
    print(f"[{_log_prefix}] {msg}", file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def kubectl(*args, stdin=None, check=True, timeout=60):
    proc = subprocess.run(
        ["kubectl", "--request-timeout", "20s", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def kubectl_result(*args, stdin=None, timeout=60):
    """(exit code, stdout, stderr) of a kubectl command that may fail."""
    proc = subprocess.run(
        ["kubectl", "--request-timeout", "20s", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def wait_for(what, seconds, check, every=0.02):
    """Polls `check` until it returns a true value or the time is up."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {seconds} s")
        time.sleep(every)


def create_namespace(ns):
    kubectl("create", "namespace", ns)
    kubectl("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    wait_for("the default ServiceAccount", 30,
             lambda: kubectl("-n", ns, "get", "serviceaccount", "default", check=False),
             every=0.25)


class Watch:
    """A `kubectl get --watch` stream; each event is stamped on arrival."""

    def __init__(self, ns, *selector):
        self.lock = threading.Lock()
        self.ns = ns
        self.selector = selector
        self.stopped = False
        self.proc = None
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self):
        # A watch the apiserver or the network drops is started again; it
        # lists what exists first, so nothing is missed, only seen later.
        while not self.stopped:
            self.proc = subprocess.Popen(
                ["kubectl", "-n", self.ns, "get", *self.selector, "--watch",
                 "--output-watch-events", "-o", "json"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._read()
            self.proc.wait()
            if not self.stopped:
                time.sleep(0.2)

    def _read(self):
        decoder = json.JSONDecoder()
        buf = ""
        for line in self.proc.stdout:
            buf += line
            while True:
                stripped = buf.lstrip()
                if not stripped:
                    buf = ""
                    break
                try:
                    event, end = decoder.raw_decode(stripped)
                except json.JSONDecodeError:
                    break
                buf = stripped[end:]
                self._event(event, now_ms())

    def _event(self, event, at):
        raise NotImplementedError

    def stop(self):
        self.stopped = True
        if self.proc is not None:
            self.proc.kill()


class PodWatch(Watch):
    """Ready and deletion times, addresses and containers of the pods a
    label selector picks."""

    def __init__(self, ns, selector="app=greeter"):
        self.ready_ms = {}
        self.deleting_ms = {}
        self.ip = {}
        self.containers = {}  # pod -> {container name: (containerID, restartCount, ready)}
        self.gone = set()
        super().__init__(ns, "pods", "-l", selector)

    def _event(self, event, at):
        pod = event.get("object", {})
        name = pod.get("metadata", {}).get("name")
        if not name:
            return
        with self.lock:
            if event.get("type") == "DELETED":
                self.gone.add(name)
                return
            if pod.get("metadata", {}).get("deletionTimestamp") and name not in self.deleting_ms:
                self.deleting_ms[name] = at
            ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in pod.get("status", {}).get("conditions", []))
            if ready and name not in self.ready_ms:
                self.ready_ms[name] = at
            if pod.get("status", {}).get("podIP"):
                self.ip[name] = pod["status"]["podIP"]
            statuses = (pod.get("status", {}).get("containerStatuses", [])
                        + pod.get("status", {}).get("initContainerStatuses", []))
            self.containers[name] = {
                s["name"]: (s.get("containerID", ""), s.get("restartCount", 0), s.get("ready"))
                for s in statuses}

    def ready_at(self, name):
        with self.lock:
            return self.ready_ms.get(name)

    def deleting_at(self, name):
        with self.lock:
            return self.deleting_ms.get(name)

    def is_gone(self, name):
        with self.lock:
            return name in self.gone

    def ip_of(self, name):
        with self.lock:
            return self.ip.get(name)

    def container(self, pod, container):
        """(containerID, restartCount, ready) as last seen, or None."""
        with self.lock:
            return self.containers.get(pod, {}).get(container)


class ClientLog:
    """One load client's report lines (`greeter-client --rate --window-ms`),
    merged: per backend the first and last call sent, and every window's
    counts."""

    def __init__(self, ns, pod, container="client"):
        self.ns = ns
        self.pod = pod
        self.container = container
        self.lock = threading.Lock()
        self.first = {}
        self.last = {}
        # (at_ms, ok, failed, failure_messages, skipped, by_backend calls, max latency ms)
        self.windows = []
        self.seen_windows = set()
        self.stopped = False
        self.proc = None
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self):
        # A dropped log stream is followed again from the start; windows
        # already counted are skipped by their end time.
        while not self.stopped:
            self.proc = subprocess.Popen(
                ["kubectl", "-n", self.ns, "logs", "-f", self.pod, "-c", self.container],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._read()
            self.proc.wait()
            if not self.stopped:
                time.sleep(0.2)

    def _read(self):
        for line in self.proc.stdout:
            try:
                w = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(w, dict) or "at_ms" not in w:
                continue
            with self.lock:
                if w["at_ms"] in self.seen_windows:
                    continue
                self.seen_windows.add(w["at_ms"])
                by_backend = w.get("by_backend", {})
                for backend, b in by_backend.items():
                    self.first[backend] = min(self.first.get(backend, b["first_sent_ms"]),
                                              b["first_sent_ms"])
                    self.last[backend] = max(self.last.get(backend, 0), b["last_sent_ms"])
                self.windows.append((w["at_ms"], w["ok"], w["failed"],
                                     w.get("failure_messages", {}), w.get("skipped", 0),
                                     {k: b["calls"] for k, b in by_backend.items()},
                                     w.get("max_latency_ms", 0)))

    def first_call(self, backend):
        with self.lock:
            return self.first.get(backend)

    def last_call(self, backend):
        with self.lock:
            return self.last.get(backend)

    def reported_until(self):
        with self.lock:
            return max((w[0] for w in self.windows), default=0)

    def wait_reported(self, until_ms, seconds=10):
        """Waits until the client reported the windows up to `until_ms`."""
        wait_for(f"{self.pod}'s report up to {until_ms}", seconds,
                 lambda: self.reported_until() >= until_ms, every=0.05)

    def failure_windows(self):
        """(window end, failure messages) of every window with a failure."""
        with self.lock:
            return [(w[0], w[3]) for w in self.windows if w[2]]

    def slowest_windows(self, start_ms, end_ms, n):
        """(window end, longest call ms) of the `n` windows in (start, end]
        with the longest calls, slowest first."""
        with self.lock:
            found = [(w[0], w[6]) for w in self.windows if start_ms < w[0] <= end_ms]
        return sorted(found, key=lambda w: -w[1])[:n]

    def calls_between(self, start_ms, end_ms):
        """(ok, failed, messages) of the windows ending in (start, end]."""
        c = self.counts_between(start_ms, end_ms)
        return c["ok"], c["failed"], c["failure_messages"]

    def counts_between(self, start_ms, end_ms):
        """Every count of the windows ending in (start, end]: ok, failed,
        skipped (not started: the client's concurrency was in use), the
        failures by message, the calls per backend, the windows and the
        longest call."""
        out = {"ok": 0, "failed": 0, "skipped": 0, "failure_messages": {},
               "by_backend": {}, "windows": 0, "max_latency_ms": 0}
        with self.lock:
            for at, ok, failed, messages, skipped, by_backend, latency in self.windows:
                if start_ms < at <= end_ms:
                    out["windows"] += 1
                    out["max_latency_ms"] = max(out["max_latency_ms"], latency)
                    out["ok"] += ok
                    out["failed"] += failed
                    out["skipped"] += skipped
                    for m, n in messages.items():
                        out["failure_messages"][m] = out["failure_messages"].get(m, 0) + n
                    for b, n in by_backend.items():
                        out["by_backend"][b] = out["by_backend"].get(b, 0) + n
        return out

    def stop(self):
        self.stopped = True
        if self.proc is not None:
            self.proc.kill()


def greeter_pod(name, version, tag, delay_ms=None, labels=None):
    """A bare greeter pod, Ready through the kubelet's gRPC probe, with the
    5 s preStop production pods have while their endpoints propagate."""
    extra = f', "--delay-ms", "{delay_ms}"' if delay_ms else ""
    all_labels = {"app": "greeter", "version": version, **(labels or {})}
    label_text = ", ".join(f"{k}: {v}" for k, v in all_labels.items())
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{label_text}}}}}
spec:
  terminationGracePeriodSeconds: 20
  securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: greeter
    image: localhost/grpc-balancer-greeter:{tag}
    imagePullPolicy: Never
    args: ["--listen", "0.0.0.0:50051", "--name", "{name}", "--version", "{version}"{extra}]
    ports: [{{containerPort: 50051, name: grpc}}]
    readinessProbe:
      grpc: {{port: 50051}}
      periodSeconds: 1
    lifecycle:
      preStop: {{sleep: {{seconds: {PRESTOP_S}}}}}
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {{drop: [ALL]}}
      readOnlyRootFilesystem: true
"""


def greeter_balancing(v1, v2, name="greeter"):
    """A GrpcBalancing over the greeter pods, split v1/v2 by weight."""
    return f"""
apiVersion: grpcbalancer.io/v1alpha1
kind: GrpcBalancing
metadata: {{name: {name}}}
spec:
  selector: {{app: greeter}}
  port: 50051
  listenerPort: 15001
  policy: {{kind: round_robin}}
  subsets:
  - {{name: v1, labels: {{version: v1}}, weight: {v1}}}
  - {{name: v2, labels: {{version: v2}}, weight: {v2}}}
"""


def load_client_deployment(name, tag, rate, window_ms, duration_s, discovery="push",
                           concurrency=32, timeout_ms=5000):
    """An injected Deployment whose app is the paced load client, calling the
    balancing `greeter` through its sidecar and printing one JSON line per
    window."""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations:
        grpcbalancer.io/sidecar.inject: "true"
        grpcbalancer.io/discovery: {discovery}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
      - name: client
        image: localhost/grpc-balancer-load-client:{tag}
        imagePullPolicy: Never
        args: ["--target", "http://$(GRPC_BALANCER_GREETER_ADDR)", "--rate", "{rate}",
               "--concurrency", "{concurrency}", "--timeout-ms", "{timeout_ms}",
               "--window-ms", "{window_ms}", "--duration-s", "{duration_s}"]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {{drop: [ALL]}}
          readOnlyRootFilesystem: true
"""


def admin_get(ip, path, timeout=2):
    with urllib.request.urlopen(f"http://{ip}:{ADMIN_PORT}{path}", timeout=timeout) as r:
        return r.read().decode()


def parse_metrics(text):
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            try:
                values[key] = float(value)
            except ValueError:
                pass
    return values


def proxy_metrics(ip):
    """The proxy's metrics (its admin port answers /metrics to any peer),
    as {"name{labels}": value}."""
    return parse_metrics(admin_get(ip, "/metrics"))


def proxy_endpoints(ip):
    """The proxy's /endpoints (the chart must set proxy.adminDebug=any for a
    peer outside the pod to read it)."""
    return json.loads(admin_get(ip, "/endpoints"))


def calls_by_address(endpoints):
    """{"ip:port": {"inFlight": n, "callsStarted": n, "ready": bool}} over
    every balancing and subset (the counts summed, ready if any is)."""
    out = {}
    for b in endpoints.get("balancings", []):
        for s in b.get("subsets", []):
            for e in s.get("endpoints", []):
                seen = out.setdefault(e["address"],
                                      {"inFlight": 0, "callsStarted": 0, "ready": False})
                seen["inFlight"] += e.get("inFlight", 0)
                seen["callsStarted"] += e.get("callsStarted", 0)
                seen["ready"] = seen["ready"] or e.get("state") == "ready"
    return out


def proxy_calls(metrics, status=None):
    """Calls the proxy counted (calls_total), all or of one gRPC status."""
    total = 0
    for key, value in metrics.items():
        if key.startswith("grpc_balancer_calls_total{"):
            if status is None or f'grpc_status="{status}"' in key:
                total += value
    return total


def applied_configs(metrics):
    return metrics.get('grpc_balancer_config_reloads_total{result="applied"}', 0)


def on_push(metrics):
    return (metrics.get("grpc_balancer_discovery_push_connected") == 1
            and metrics.get('grpc_balancer_discovery_subsets{source="push"}', 0) > 0
            and metrics.get('grpc_balancer_discovery_subsets{source="dns"}', 0) == 0)


def on_dns(metrics):
    return (metrics.get("grpc_balancer_discovery_push_connected", 0) == 0
            and metrics.get('grpc_balancer_discovery_subsets{source="push"}', 0) == 0)


def summary(values):
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered) + 0.5) - 1))]
    return {"n": len(values), "median_ms": statistics.median(ordered), "p99_ms": p99,
            "max_ms": ordered[-1], "min_ms": ordered[0]}


class Node:
    """The node's containerd, seen from the host: a container's process and
    what /proc says of it."""

    def __init__(self, state_dir):
        self.sock = os.path.join(state_dir, "node", "containerd", "containerd.sock")
        if not os.path.exists(self.sock):
            raise RuntimeError(f"{self.sock}: no containerd socket; is the real node up?")

    def ctr(self, *args):
        proc = subprocess.run(["ctr", "--address", self.sock, "--namespace", "k8s.io", *args],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def pid(self, container_id):
        """The host pid of a running container (its `containerd://` id from
        the pod's status)."""
        cid = container_id.split("://", 1)[-1]
        for line in self.ctr("tasks", "ls").splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == cid and fields[2] == "RUNNING":
                return int(fields[1])
        return None


def process_stats(pid):
    """RSS (KiB), open file descriptors and threads of a host process."""
    rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"rss_kib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


def stop_followers(run):
    """Stops the streams a chaos or soak run follows (its pod watches and the
    client's log), whichever it got as far as starting."""
    for name in ("watch", "client_watch", "log"):
        follower = getattr(run, name, None)
        if follower is not None:
            follower.stop()
