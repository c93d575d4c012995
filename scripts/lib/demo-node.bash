# shellcheck shell=bash
# The demo on the real node, sourced by scripts/demo (which parsed the options: short,
# no_color, summary_file, images). Every step is the kubectl or helm command a user
# would type, printed as it runs; the figures are the load client's own JSON reports
# (calls per answering pod), read back from inside the client pod.
#
# The phases, in order (each a key of .phases in the summary):
#   before           the client pod, not injected, calls the ClusterIP Service over one
#                    connection (kube-proxy balances connections, not calls)
#   after            the same client, injected, calls through its sidecar (75/25)
#   stream           bidi streams through the sidecar (none split over pods)
#   scale_out        steady calls while greeter-v1 scales 2 -> 3
#   rollout_restart  steady calls while every greeter pod is replaced
#   pod_delete       steady calls while a greeter pod is deleted

# Set by scripts/demo before it sources this file.
: "${short:?}" "${no_color:?}" "${summary_file?}" "${images?}"

DEMO_NS=demo
RELEASE=grpc-balancer
RELEASE_NS=grpc-balancer-system

demo_style() {
  if ((no_color == 0)) && [[ -t 1 ]]; then
    B=$'\033[1m' D=$'\033[2m' G=$'\033[32m' R=$'\033[31m' C1=$'\033[36m' C2=$'\033[35m' N=$'\033[0m'
  else
    B="" D="" G="" R="" C1="" C2="" N=""
  fi
}
heading() { printf '\n%s━━ %s. %s%s\n' "$B" "$1" "$2" "$N"; }
done_() { printf '  %s✔%s %s\n' "$G" "$N" "$*"; }
note() { printf '    %s%s%s\n' "$D" "$*" "$N"; }
# run CMD... — prints the command as a user would type it, then runs it quietly.
run() {
  local shown=() a
  for a in "$@"; do
    if [[ "$a" == k ]]; then a=kubectl; fi
    if [[ "$a" =~ [^A-Za-z0-9_./:=,@%+-] ]]; then a="'${a}'"; fi
    shown+=("$a")
  done
  printf '  %s$ %s%s\n' "$D" "${shown[*]}" "$N"
  in_background "$@" >/dev/null
}
# in_background CMD... — runs CMD and waits for it in a way a signal interrupts: bash
# runs a trap only once a foreground command has ended, but at once during `wait`.
in_background() {
  "$@" &
  bg_pid=$!
  local rc=0
  wait "$bg_pid" || rc=$?
  bg_pid=""
  return "$rc"
}
# demo_fail MESSAGE — says what failed and shows the cluster's pods and latest events
# (the cluster is removed on exit).
demo_fail() {
  printf '\n%sdemo failed:%s %s\n' "$R" "$N" "$*" >&2
  if [[ -n "${state:-}" ]]; then
    printf '\npods:\n' >&2
    k get pods -A -o wide >&2 2>/dev/null || true
    printf '\nlatest events:\n' >&2
    k get events -A --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
  fi
  exit 1
}

k() { kubectl --request-timeout 20s "$@"; }

# poll SECONDS CMD... — retries CMD every 0.25 s until it succeeds or the time is up.
poll() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.25
  done
}

now_ms() { local t=$EPOCHREALTIME; printf '%s' "$((${t%.*} * 1000 + 10#${t#*.} / 1000))"; }

# --- the load client, run inside the client pod ----------------------------------------

# client_load OUT ARGS... — runs the load client image's binary inside the client pod
# with ARGS and writes its JSON report to OUT.
client_load() {
  local out="$1"; shift
  in_background timeout 300 kubectl -n "$DEMO_NS" exec "$client_pod" -c client -- /greeter-client --json "$@" \
    2>/dev/null >"${out}.raw" || true
  grep '^{' "${out}.raw" >"$out"
}

# A phase's report with each pod's version (from its Deployment's name) added up.
with_versions() {
  jq '.by_version = (reduce (.by_backend | to_entries[]) as $e ({};
        .[(($e.key | capture("-(?<v>v[0-9]+)-") | .v) // "?")] += $e.value))'
}

# steady_start NAME — calls through the sidecar without pause, in batches of 100
# (4 at a time, each held 20 ms by the greeter), until steady_stop.
steady_start() {
  steady_dir="${work}/steady-$1"
  mkdir -p "$steady_dir"
  (
    local i=0
    while [[ ! -e "${steady_dir}/stop" ]]; do
      i=$((i + 1))
      client_load "${steady_dir}/batch-${i}.json" --target "http://${client_target}" --calls 100 \
        --concurrency 4 --metadata x-greeter-delay-ms=20 --timeout-ms 5000 \
        || printf '{"batch_error": 1}\n' >"${steady_dir}/batch-${i}.json"
    done
  ) &
  steady_pid=$!
}
# steady_batches — batches finished so far.
steady_batches() { compgen -G "${steady_dir}/batch-*.json" | wc -l; }
# batches_at_least N — at least N batches finished.
batches_at_least() { (($(steady_batches) >= $1)); }
# steady_stop PHASE — ends the steady calls and records them as PHASE.
steady_stop() {
  touch "${steady_dir}/stop"
  wait "$steady_pid" || true
  steady_pid=""
  jq -s 'reduce .[] as $r ({calls: 0, ok: 0, failed: 0, by_backend: {}, failures: {},
      split_streams: 0, elapsed_ms: 0, batch_errors: 0};
    .calls += ($r.calls // 0) | .ok += ($r.ok // 0) | .failed += ($r.failed // 0)
    | .split_streams += ($r.split_streams // 0) | .elapsed_ms += ($r.elapsed_ms // 0)
    | .batch_errors += ($r.batch_error // 0)
    | reduce (($r.by_backend // {}) | to_entries[]) as $e (.; .by_backend[$e.key] += $e.value)
    | reduce (($r.failures // {}) | to_entries[]) as $e (.; .failures[$e.key] += $e.value))' \
    "${steady_dir}"/batch-*.json | with_versions >"${work}/phase-$1.json"
}

# --- output: a table and a bar per pod ---------------------------------------------------

# print_phase PHASE — one row per greeter pod seen so far (those with no call too: the
# empty rows are the point of the "before" phase), then the split by version.
print_phase() {
  local file="${work}/phase-$1.json" name version calls share cells bar colour
  printf '    %s%-28s %-8s %7s %7s%s\n' "$D" backend version calls share "$N"
  while IFS=$'\t' read -r name version calls share cells; do
    bar=""
    for ((c = 0; c < cells; c++)); do bar+="█"; done
    if ((calls > 0 && cells == 0)); then bar="▏"; fi
    case "$version" in v1) colour="$C1" ;; v2) colour="$C2" ;; *) colour="" ;; esac
    printf '    %-28s %-8s %7s %6.1f%%  %s%s%s\n' "$name" "$version" "$calls" "$share" "$colour" "$bar" "$N"
  done < <(jq -r --slurpfile known "${work}/pods.json" '
      ([.by_backend[]] | add // 0) as $total | ([.by_backend[]] | max // 0) as $max
      | (($known[0] + (.by_backend | keys)) | unique)[] as $pod
      | (.by_backend[$pod] // 0) as $n
      | [$pod, (($pod | capture("-(?<v>v[0-9]+)-") | .v) // "?"), $n,
         (if $total == 0 then 0 else $n * 1000 / $total | round / 10 end),
         (if $max == 0 then 0 else $n * 40 / $max | round end)] | @tsv' "$file")
  local line failed
  line="$(jq -r 'def tenths: (. * 10 | round) as $x | "\($x / 10 | floor).\($x % 10)";
    ([.by_backend[]] | add // 0) as $t
    | "\(.calls) calls in \(.elapsed_ms / 1000 | tenths) s of calling · "
      + ([.by_version | to_entries[] | "\(.key) \(if $t == 0 then 0 else .value * 100 / $t end | tenths)%"] | join(" · "))' "$file")"
  failed="$(jq -r '.failed + (.batch_errors // 0)' "$file")"
  if ((failed == 0)); then
    printf '    %s · %s0 failed%s\n' "$line" "$G" "$N"
  else
    printf '    %s · %s%s failed %s%s\n' "$line" "$R" "$failed" "$(jq -c '.failures' "$file")" "$N"
  fi
}

# remember_pods — the greeter pods now running are the rows of the next tables (with
# the pods that answered a call).
remember_pods() {
  k -n "$DEMO_NS" get pods -l app=greeter -o json \
    | jq '[.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name]' >"${work}/pods.new"
  mv "${work}/pods.new" "${work}/pods.json"
}

greeter_pods() {
  k -n "$DEMO_NS" get pods -l "app=greeter${1:+,version=$1}" -o json \
    | jq -r '.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name'
}
pod_ready() {
  [[ "$(k -n "$DEMO_NS" get pod "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
# proxy_called IP — the client's sidecar has sent at least one call to the pod at IP
# (its Prometheus metrics, on the admin port every pod may read).
proxy_called() {
  curl -sf --max-time 2 "http://${client_ip}:9901/metrics" \
    | awk -v ip="$1" 'index($0, "grpc_balancer_calls_total{") == 1 && index($0, "endpoint=\"" ip ":") && $NF > 0 { found = 1 }
      END { exit !found }'
}

# --- clean-up --------------------------------------------------------------------------

demo_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "${bg_pid:-}" ]]; then kill "$bg_pid" 2>/dev/null || true; fi
  if [[ -n "${steady_pid:-}" ]]; then
    touch "${steady_dir}/stop" 2>/dev/null || true
    local child
    for child in $(ps -o pid= --ppid "$steady_pid" 2>/dev/null); do kill "$child" 2>/dev/null || true; done
    kill "$steady_pid" 2>/dev/null || true
  fi
  if [[ -n "${state:-}" && -d "$state" ]]; then
    printf '\n%s==> removing the cluster (every pod, container, mount, iptables rule, process)%s\n' "$B" "$N" >&2
    scripts/control-plane down "$state" >/dev/null 2>&1 || printf 'demo: `scripts/control-plane down %s` failed\n' "$state" >&2
  fi
  [[ -n "${work:-}" ]] && rm -rf "$work"
  exit "$rc"
}

# --- the demo --------------------------------------------------------------------------

demo_node_main() {
  demo_style
  local started=$SECONDS tag
  tag="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
  command -v jq >/dev/null || demo_fail "jq is missing (apt-get install jq)"
  command -v curl >/dev/null || demo_fail "curl is missing (apt-get install curl)"
  local calls_before=1000 calls_after=8000 streams=100
  # What the client dials, before and after injection alike.
  client_target=greeter:50051
  if ((short)); then calls_before=400; calls_after=4000; streams=40; fi

  step "Kubernetes components, containerd and CoreDNS (cached after the first build)"
  scripts/control-plane install
  if [[ -z "$images" ]]; then
    images="${CARGO_TARGET_DIR:-$PWD/target}/images"
    step "building the images (operator, proxy, greeter, load client) into ${images}"
    scripts/install-image-deps
    # Without incremental caches, as scripts/test builds them: the same build serves both.
    CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}" scripts/build-images --out "$images" --profile "${GRPC_BALANCER_IMAGE_PROFILE:-dev}" >/dev/null
  fi
  local name
  for name in operator proxy greeter load-client; do
    [[ -f "${images}/grpc-balancer-${name}.oci.tar" ]] \
      || demo_fail "missing ${images}/grpc-balancer-${name}.oci.tar; run scripts/build-images --out ${images}"
  done

  # shellcheck source=scripts/lib/node-lock.bash
  source scripts/lib/node-lock.bash
  hold_node_lock demo

  work="$(mktemp -d "${TMPDIR:-/tmp}/grpc-balancer-demo.XXXXXX")"
  echo '[]' >"${work}/pods.json"
  state=""
  steady_pid=""
  trap demo_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM

  heading 1 "A local cluster with a real node"
  local kubeconfig t0=$SECONDS
  # In the foreground: a signal waits until `up` is done (under a minute), so that
  # `down` then finds a whole node to remove rather than half of one.
  kubeconfig="$(scripts/control-plane up --node --owner-pid $$ 2>"${work}/up.log")" \
    || { cat "${work}/up.log" >&2; demo_fail "the node did not come up"; }
  state="$(dirname "$kubeconfig")"
  eval "$(scripts/control-plane env "$kubeconfig")"
  local node_info
  node_info="$(k get nodes -o jsonpath='{.items[0].metadata.name} {.items[0].status.nodeInfo.kubeletVersion} {.items[0].status.nodeInfo.containerRuntimeVersion}')"
  done_ "node ${node_info% * *} Ready: kubelet ${node_info#* }; kube-proxy (iptables), CoreDNS — up in $((SECONDS - t0)) s"
  note "KUBECONFIG=${kubeconfig}"
  scripts/control-plane load-images "$state" "${images}/grpc-balancer-operator.oci.tar" \
    "${images}/grpc-balancer-proxy.oci.tar" "${images}/grpc-balancer-greeter.oci.tar" \
    "${images}/grpc-balancer-load-client.oci.tar" 2>/dev/null
  done_ "images loaded into containerd: localhost/grpc-balancer-{operator,proxy,greeter,load-client}:${tag}"

  heading 2 "helm install grpc-balancer (the operator as 2 pods, the webhook behind its Service)"
  run k create namespace "$RELEASE_NS"
  run k label namespace "$RELEASE_NS" pod-security.kubernetes.io/enforce=restricted
  t0=$SECONDS
  run helm install "$RELEASE" charts/grpc-balancer --namespace "$RELEASE_NS" \
    --set operator.image.repository=localhost/grpc-balancer-operator --set operator.image.tag="$tag" \
    --set operator.image.pullPolicy=Never \
    --set proxy.image.repository=localhost/grpc-balancer-proxy --set proxy.image.tag="$tag" \
    --set proxy.image.pullPolicy=Never --set webhook.failurePolicy=Fail --wait --timeout 180s \
    || demo_fail "helm install did not become ready"
  local operator_pods leader webhook_svc
  operator_pods="$(k -n "$RELEASE_NS" get pods -o jsonpath='{.items[*].metadata.name}')"
  leader_known() { [[ -n "$(k -n "$RELEASE_NS" get leases -o jsonpath='{.items[0].spec.holderIdentity}')" ]]; }
  poll 60 leader_known || demo_fail "no operator pod took the leader Lease"
  leader="$(k -n "$RELEASE_NS" get leases -o jsonpath='{.items[0].spec.holderIdentity}')"
  ca_bundle_set() { [[ -n "$(k get mutatingwebhookconfiguration "$RELEASE" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ]]; }
  poll 60 ca_bundle_set || demo_fail "the operator did not set the webhook's caBundle"
  webhook_svc="$(k get mutatingwebhookconfiguration "$RELEASE" -o jsonpath='{.webhooks[0].clientConfig.service.namespace}/{.webhooks[0].clientConfig.service.name}')"
  done_ "operator pods Ready in $((SECONDS - t0)) s: ${operator_pods}"
  done_ "leader (Lease holder): ${leader}; the apiserver calls the webhook at Service ${webhook_svc}"

  heading 3 "Backends: greeter v1 ×2 and v2 ×1 behind one ClusterIP Service"
  run k create namespace "$DEMO_NS"
  run k label namespace "$DEMO_NS" pod-security.kubernetes.io/enforce=restricted
  poll 30 k -n "$DEMO_NS" get serviceaccount default || demo_fail "namespace ${DEMO_NS} has no default ServiceAccount"
  local version replicas
  for version in v1 v2; do
    replicas=2; [[ "$version" == v2 ]] && replicas=1
    cat >"${work}/greeter-${version}.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: greeter-${version}}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: greeter, version: ${version}}}
  template:
    metadata: {labels: {app: greeter, version: ${version}}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: greeter
        image: localhost/grpc-balancer-greeter:${tag}
        imagePullPolicy: Never
        args: ["--listen", "0.0.0.0:50051", "--name", "\$(POD_NAME)", "--version", "${version}"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 50051, name: grpc}]
        readinessProbe:
          grpc: {port: 50051}
          periodSeconds: 1
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
YAML
    run k -n "$DEMO_NS" apply -f "${work}/greeter-${version}.yaml"
  done
  cat >"${work}/greeter-service.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: greeter}
spec:
  selector: {app: greeter}
  ports: [{name: grpc, port: 50051, targetPort: grpc}]
YAML
  run k -n "$DEMO_NS" apply -f "${work}/greeter-service.yaml"
  t0=$SECONDS
  run k -n "$DEMO_NS" wait --for=condition=Available deployment/greeter-v1 deployment/greeter-v2 --timeout 120s \
    || demo_fail "the greeter pods did not become Ready"
  remember_pods
  local cluster_ip
  cluster_ip="$(k -n "$DEMO_NS" get service greeter -o jsonpath='{.spec.clusterIP}')"
  done_ "3 greeter pods Ready (the kubelet's gRPC probe) in $((SECONDS - t0)) s: $(jq -r 'join(" ")' "${work}/pods.json")"
  done_ "Service greeter: ClusterIP ${cluster_ip}:50051, balanced by kube-proxy per connection"

  heading 4 "Before: a client pod calls the Service over one connection"
  cat >"${work}/client.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: client}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      terminationGracePeriodSeconds: 1
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: client
        image: localhost/grpc-balancer-load-client:${tag}
        imagePullPolicy: Never
        # The app: one call a second, forever, to the Service by its DNS name.
        args: ["--target", "http://greeter:50051", "--calls", "1000000000", "--metadata", "x-greeter-delay-ms=1000"]
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
YAML
  run k -n "$DEMO_NS" apply -f "${work}/client.yaml"
  run k -n "$DEMO_NS" rollout status deployment/client --timeout 120s || demo_fail "the client pod did not start"
  client_pod="$(k -n "$DEMO_NS" get pods -l app=client -o jsonpath='{.items[0].metadata.name}')"
  local before_containers
  before_containers="$(k -n "$DEMO_NS" get pod "$client_pod" -o json | jq -c '[(.spec.initContainers // [])[].name] + [.spec.containers[].name]')"
  done_ "client pod ${client_pod} (containers ${before_containers}: no sidecar)"
  printf '  %s$ kubectl -n demo exec %s -- /greeter-client --target http://greeter:50051 --calls %s%s\n' "$D" "$client_pod" "$calls_before" "$N"
  client_load "${work}/before.json" --target http://greeter:50051 --calls "$calls_before" \
    || demo_fail "the client could not call the Service"
  with_versions <"${work}/before.json" >"${work}/phase-before.json"
  print_phase before
  note "kube-proxy picked a pod when the connection opened; every call of that connection followed it."

  heading 5 "A GrpcBalancing: 75 % of the calls to v1, 25 % to v2, round robin within a version"
  cat >"${work}/balancing.yaml" <<YAML
apiVersion: grpcbalancer.io/v1alpha1
kind: GrpcBalancing
metadata: {name: greeter}
spec:
  selector: {app: greeter}
  port: 50051
  # The Service the client already dials: in injected pods its names resolve
  # to the sidecar, so the client needs no change at all.
  service: greeter
  policy: {kind: round_robin}
  dnsRefreshInterval: 2s
  subsets:
  - {name: v1, labels: {version: v1}, weight: 75}
  - {name: v2, labels: {version: v2}, weight: 25}
YAML
  sed 's/^/      /' "${work}/balancing.yaml"
  run k -n "$DEMO_NS" apply -f "${work}/balancing.yaml"
  run k -n "$DEMO_NS" wait --for=condition=Ready grpcbalancing/greeter --timeout 60s \
    || demo_fail "GrpcBalancing greeter not Ready: $(k -n "$DEMO_NS" get grpcbalancing greeter -o jsonpath='{.status.conditions}')"
  done_ "the operator made its headless Services and proxy config: $(k -n "$DEMO_NS" get services -o name | grep -v '^service/greeter$' | paste -sd ' ')"

  heading 6 "After: the same client, injected with the proxy"
  note "One change to the client's Deployment: the annotation. Its image, args and env stay as they"
  note "are: the webhook maps the Service's names to the sidecar in the pod's /etc/hosts."
  client_args_before="$(k -n "$DEMO_NS" get deployment client -o json | jq -c '.spec.template.spec.containers[] | select(.name == "client") | {image, args, env}')"
  local patch='{"spec":{"template":{"metadata":{"annotations":{"grpcbalancer.io/sidecar.inject":"true"}}}}}'
  run k -n "$DEMO_NS" patch deployment client --type strategic -p "$patch"
  run k -n "$DEMO_NS" rollout status deployment/client --timeout 120s || demo_fail "the injected client pod did not start"
  injected_pod() {
    k -n "$DEMO_NS" get pods -l app=client -o json | jq -er '[.items[]
      | select(.metadata.deletionTimestamp == null)
      | select(any((.spec.initContainers // [])[]; .name == "grpc-balancer-proxy"))][0].metadata.name'
  }
  poll 60 injected_pod || demo_fail "no injected client pod"
  client_pod="$(injected_pod)"
  poll 60 pod_ready "$client_pod" || demo_fail "the injected client pod ${client_pod} is not Ready"
  k -n "$DEMO_NS" get pod "$client_pod" -o json \
    | jq '(.spec.initContainers[] | select(.name == "grpc-balancer-proxy") | {name, image, restartPolicy,
           ports: [.ports[]?.containerPort]}) + {pod_containers: ([.spec.initContainers[].name] + [.spec.containers[].name])}' \
      >"${work}/sidecar.json"
  k -n "$DEMO_NS" get pod "$client_pod" -o json | jq -c '[.spec.hostAliases[]? | select(.hostnames | index("greeter"))]' \
    >"${work}/host-aliases.json"
  local alias_ip
  alias_ip="$(jq -r '.[0].ip // empty' "${work}/host-aliases.json")"
  [[ -n "$alias_ip" ]] || demo_fail "the webhook mapped no name of Service greeter in ${client_pod}"
  proxy_addr="${alias_ip}:50051"
  client_args_after="$(k -n "$DEMO_NS" get deployment client -o json | jq -c '.spec.template.spec.containers[] | select(.name == "client") | {image, args, env}')"
  client_ip="$(k -n "$DEMO_NS" get pod "$client_pod" -o jsonpath='{.status.podIP}')"
  done_ "client pod ${client_pod}: sidecar $(jq -r '"\(.name) (\(.image)), restartPolicy \(.restartPolicy // "-"): a native sidecar"' "${work}/sidecar.json")"
  done_ "in the pod, $(jq -r '.[0].hostnames | join(", ")' "${work}/host-aliases.json") → ${alias_ip} (status.address of the GrpcBalancing)"
  done_ "the client still calls ${client_target}, now its sidecar at ${proxy_addr}, over one HTTP/2 connection"
  printf '  %s$ kubectl -n demo exec %s -c client -- /greeter-client --target http://%s --calls %s%s\n' "$D" "$client_pod" "$client_target" "$calls_after" "$N"
  client_load "${work}/after.json" --target "http://${client_target}" --calls "$calls_after" --concurrency 4 \
    || demo_fail "the injected client could not call through its sidecar"
  with_versions <"${work}/after.json" >"${work}/phase-after.json"
  print_phase after

  heading 7 "Streams through the sidecar stay on one pod"
  printf '  %s$ kubectl -n demo exec %s -c client -- /greeter-client --target http://%s --mode bidi --calls %s --messages 10%s\n' \
    "$D" "$client_pod" "$client_target" "$streams" "$N"
  client_load "${work}/stream.json" --target "http://${client_target}" --mode bidi --calls "$streams" --messages 10 \
    || demo_fail "the bidi streams failed"
  with_versions <"${work}/stream.json" >"${work}/phase-stream.json"
  print_phase stream
  done_ "$(jq -r '.split_streams' "${work}/phase-stream.json") of ${streams} streams split over pods: each stream is balanced as one call"

  heading 8 "kubectl scale: a new pod gets calls seconds after it is Ready"
  steady_start scale_out
  poll 60 batches_at_least 1 || demo_fail "the steady calls did not start"
  local known_v1 new_pod="" added_ms
  known_v1=" $(greeter_pods v1 | tr '\n' ' ') "
  run k -n "$DEMO_NS" scale deployment greeter-v1 --replicas 3
  find_new_pod() {
    local p
    for p in $(greeter_pods v1); do
      if [[ "$known_v1" != *" ${p} "* ]]; then printf '%s' "$p"; return 0; fi
    done
    return 1
  }
  poll 30 find_new_pod || demo_fail "no new greeter-v1 pod after scaling"
  new_pod="$(find_new_pod)"
  poll 90 pod_ready "$new_pod" || demo_fail "the new pod ${new_pod} did not become Ready"
  local t_ready new_ip
  t_ready="$(now_ms)"
  new_ip="$(k -n "$DEMO_NS" get pod "$new_pod" -o jsonpath='{.status.podIP}')"
  poll 60 proxy_called "$new_ip" || demo_fail "the sidecar sent no call to ${new_pod} within 60 s of it being Ready"
  added_ms=$(($(now_ms) - t_ready))
  done_ "${new_pod} Ready; its first call came $(awk -v m="$added_ms" 'BEGIN { printf "%.1f", m / 1000 }') s later (EndpointSlice → CoreDNS → the sidecar's DNS refresh)"
  local batches
  batches="$(steady_batches)"
  poll 60 batches_at_least "$((batches + 2))" || true
  steady_stop scale_out
  remember_pods
  print_phase scale_out

  heading 9 "kubectl rollout restart of every backend under steady calls"
  local old_pods
  old_pods="$(greeter_pods | jq -R . | jq -sc .)"
  steady_start rollout_restart
  poll 60 batches_at_least 1 || demo_fail "the steady calls did not start"
  t0=$SECONDS
  run k -n "$DEMO_NS" rollout restart deployment/greeter-v1 deployment/greeter-v2
  run k -n "$DEMO_NS" rollout status deployment/greeter-v1 --timeout 180s || demo_fail "greeter-v1 did not roll out"
  run k -n "$DEMO_NS" rollout status deployment/greeter-v2 --timeout 180s || demo_fail "greeter-v2 did not roll out"
  # shellcheck disable=SC2046 # pod names, one word each
  old_gone() { [[ -z "$(k -n "$DEMO_NS" get pods -o name $(jq -r '.[]' <<<"$old_pods") --ignore-not-found)" ]]; }
  poll 90 old_gone || demo_fail "the old greeter pods did not go away"
  local rollout_secs=$((SECONDS - t0)) spanned=false
  # The calls must have been flowing the whole time: the steady run is still going now.
  [[ ! -e "${steady_dir}/stop" ]] && kill -0 "$steady_pid" 2>/dev/null && spanned=true
  batches="$(steady_batches)"
  poll 60 batches_at_least "$((batches + 2))" || true
  steady_stop rollout_restart
  remember_pods
  local new_pods
  new_pods="$(greeter_pods | jq -R . | jq -sc .)"
  done_ "$(jq length <<<"$old_pods") old pods replaced by $(jq length <<<"$new_pods") new ones in ${rollout_secs} s, calls flowing throughout"
  print_phase rollout_restart

  heading 10 "A pod deleted under steady calls"
  local victim victim_ip
  victim="$(greeter_pods v1 | head -n1)"
  victim_ip="$(k -n "$DEMO_NS" get pod "$victim" -o jsonpath='{.status.podIP}')"
  steady_start pod_delete
  poll 60 proxy_called "$victim_ip" || true
  poll 60 batches_at_least 2 || demo_fail "the steady calls did not start"
  run k -n "$DEMO_NS" delete pod "$victim" --timeout 90s
  batches="$(steady_batches)"
  poll 60 batches_at_least "$((batches + 3))" || true
  steady_stop pod_delete
  done_ "${victim} deleted (the Deployment replaced it)"
  remember_pods
  print_phase pod_delete

  heading 11 "Summary"
  local total_ms=$(((SECONDS - started) * 1000))
  jq -n --slurpfile before "${work}/phase-before.json" --slurpfile after "${work}/phase-after.json" \
    --slurpfile stream "${work}/phase-stream.json" --slurpfile scale "${work}/phase-scale_out.json" \
    --slurpfile rollout "${work}/phase-rollout_restart.json" --slurpfile del "${work}/phase-pod_delete.json" \
    --slurpfile sidecar "${work}/sidecar.json" --slurpfile aliases "${work}/host-aliases.json" \
    --argjson client_before "$client_args_before" --argjson client_after "$client_args_after" \
    --arg node "$node_info" --arg operator_pods "$operator_pods" --arg leader "$leader" --arg webhook_svc "$webhook_svc" \
    --arg cluster_ip "$cluster_ip" --argjson before_containers "$before_containers" --arg proxy_addr "$proxy_addr" \
    --arg added "$new_pod" --argjson added_ms "$added_ms" --arg removed "$victim" \
    --argjson old_pods "$old_pods" --argjson new_pods "$new_pods" --argjson spanned "$spanned" \
    --argjson rollout_secs "$rollout_secs" --argjson total_ms "$total_ms" --arg tag "$tag" '{
      mode: "node",
      node: ($node | split(" ") | {name: .[0], kubelet: .[1], runtime: .[2]}),
      operator: {pods: ($operator_pods | split(" ")), leader: $leader, webhook_service: $webhook_svc},
      images_tag: $tag,
      weights: {v1: 75, v2: 25},
      phases: {before: $before[0], after: $after[0], stream: $stream[0], scale_out: $scale[0],
               rollout_restart: $rollout[0], pod_delete: $del[0]},
      before: {target: "greeter:50051", cluster_ip: $cluster_ip, client_containers: $before_containers,
               client: $client_before},
      after: {target: "greeter:50051", client: $client_after, host_aliases: $aliases[0]},
      injected_sidecar: $sidecar[0],
      proxy_addr: $proxy_addr,
      added_backend: $added, added_backend_first_call_ms: $added_ms,
      rollout: {old_pods: $old_pods, new_pods: $new_pods, seconds: $rollout_secs, calls_spanned_rollout: $spanned},
      removed_backend: $removed,
      total_elapsed_ms: $total_ms
    }' >"${work}/summary.json"
  if [[ -n "$summary_file" ]]; then cp "${work}/summary.json" "$summary_file"; fi
  jq -r '
    def tenths: (. * 10 | round) as $x | "\($x / 10 | floor).\($x % 10)";
    def share($p; $v): ([$p.by_backend[]] | add // 0) as $t | if $t == 0 then 0 else ($p.by_version[$v] // 0) * 100 / $t end | tenths;
    .phases as $ph
    | "    phase             calls  failed  pods   v1 %   v2 %",
      (["before", "after", "stream", "scale_out", "rollout_restart", "pod_delete"][] as $n
       | $ph[$n] as $p
       | "    \($n | . + " " * (16 - length)) \($p.calls | tostring | " " * (6 - length) + .)  \(($p.failed + ($p.batch_errors // 0)) | tostring | " " * (6 - length) + .)  \($p.by_backend | length | tostring | " " * (4 - length) + .)  \(share($p; "v1") | tostring | " " * (5 - length) + .)  \(share($p; "v2") | tostring | " " * (5 - length) + .)")' \
    "${work}/summary.json"
  printf '\n    Through a plain ClusterIP Service every call of a connection lands on one pod; with\n'
  printf '    the injected proxy each call is balanced: 75/25 by version, round robin within a\n'
  printf '    version, a new pod used %s s after Ready, a rollout restart and a deleted pod with\n' \
    "$(awk -v m="$added_ms" 'BEGIN { printf "%.1f", m / 1000 }')"
  printf '    %s failed calls. All of it ran as pods in containerd on this machine.\n' \
    "$(jq -r '[.phases[] | .failed + (.batch_errors // 0)] | add' "${work}/summary.json")"
  printf '    (%s s in all)\n' "$((SECONDS - started))"
}
