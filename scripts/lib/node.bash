# shellcheck shell=bash
# The real node of `scripts/control-plane up --node`: containerd + runc, a CNI bridge,
# kube-scheduler, kubelet, kube-proxy (iptables mode) and CoreDNS as a pod, and the
# `down` that removes every trace of them. Sourced by scripts/control-plane, which
# provides log, die, start, alive, wait_for, STATE and the install dirs.
#
# One node per machine: the bridge, the pod and Service CIDRs and the iptables chains
# have fixed names, and NODE_MARK records which state dir owns them.

NODE_BRIDGE="gbnode0"
# Pods get addresses from NODE_POD_CIDR on the bridge; the bridge holds NODE_IP, which is
# also the node's InternalIP and the address the apiserver listens on (pods reach the
# apiserver there through the `kubernetes` Service).
NODE_POD_CIDR="10.244.0.0/24"
NODE_IP="10.244.0.1"
NODE_SERVICE_CIDR="10.96.0.0/16"
NODE_DNS_IP="10.96.0.10"
NODE_MARK="/run/grpc-balancer-node"
# Our own iptables chain (mangle FORWARD): pod traffic may go only back to the bridge.
NODE_GUARD_CHAIN="GRPC-BALANCER-NODE"
# Chains made by kube-proxy and the kubelet (KUBE-*), by the CNI portmap plugin (CNI-*)
# and by us; `down` removes exactly these and the rules that jump to them.
NODE_CHAIN_RE='^(KUBE-|CNI-|GRPC-BALANCER-)'
# Kernel settings the node changes (the kubelet sets the first four, see
# KubeletConfiguration.protectKernelDefaults); `up` records them and `down` restores them.
NODE_SYSCTLS=(kernel/panic kernel/panic_on_oops vm/overcommit_memory vm/panic_on_oom
  net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables)

node_dir() { printf '%s/node' "$STATE"; }
containerd_sock() { printf '%s/node/containerd/containerd.sock' "$STATE"; }
ctr_k8s() { ctr --address "$(containerd_sock)" --namespace k8s.io "$@"; }

# Says exactly what this machine lacks to run containers, so the caller can fall back to
# the stand-in knowingly.
#
# node_machine_missing prints, one a line, what the machine itself lacks (root, cgroups,
# overlayfs, bridge netfilter): nothing an install could add. It reads the kernel's
# state under NODE_PROC_ROOT and NODE_SYS_ROOT (/proc and /sys; a test points them at a
# copy with one capability taken out).
NODE_PROC_ROOT="${GRPC_BALANCER_NODE_PROC_ROOT:-/proc}"
NODE_SYS_ROOT="${GRPC_BALANCER_NODE_SYS_ROOT:-/sys}"
node_machine_missing() {
  [[ $(id -u) -eq 0 ]] || echo "root (the kubelet and containerd manage cgroups, mounts and network namespaces; you are uid $(id -u))"
  # cgroup v2 lists its controllers in one file; v1 mounts one directory per controller.
  local sub controllers="" wanted=(cpu cpuacct cpuset memory pids)
  if [[ -f "${NODE_SYS_ROOT}/fs/cgroup/cgroup.controllers" ]]; then
    controllers=" $(cat "${NODE_SYS_ROOT}/fs/cgroup/cgroup.controllers" 2>/dev/null) "
    wanted=(cpu cpuset memory pids)
  fi
  for sub in "${wanted[@]}"; do
    [[ -d "${NODE_SYS_ROOT}/fs/cgroup/${sub}" || "$controllers" == *" ${sub} "* ]] \
      || echo "the ${sub} cgroup controller (none in ${NODE_SYS_ROOT}/fs/cgroup)"
  done
  [[ " $(awk '{ print $NF }' "${NODE_PROC_ROOT}/filesystems" 2>/dev/null | tr '\n' ' ') " == *" overlay "* ]] \
    || echo "overlayfs in the kernel (not in ${NODE_PROC_ROOT}/filesystems; modprobe overlay)"
  [[ -d "${NODE_PROC_ROOT}/sys/net/bridge" ]] || echo "bridge netfilter (no ${NODE_PROC_ROOT}/sys/net/bridge; modprobe br_netfilter)"
  return 0
}

node_preflight() {
  local missing=() line
  while IFS= read -r line; do missing+=("$line"); done < <(node_machine_missing)
  local b
  for b in containerd runc ctr iptables ip6tables dig; do
    command -v "$b" >/dev/null || missing+=("${b} (scripts/control-plane install)")
  done
  for b in bridge host-local loopback portmap; do
    [[ -x "${CNI_BIN_DIR}/${b}" ]] || missing+=("the CNI ${b} plugin in ${CNI_BIN_DIR} (scripts/control-plane install)")
  done
  for b in "${K8S_NODE_DIR}/bin/kubelet" "${K8S_NODE_DIR}/bin/kube-scheduler" "${K8S_NODE_DIR}/bin/kube-proxy" \
    "${PAUSE_DIR}/pause.oci.tar" "${COREDNS_DIR}/coredns.oci.tar"; do
    [[ -e "$b" ]] || missing+=("${b} (scripts/control-plane install)")
  done
  if ((${#missing[@]})); then
    log "this machine cannot run the real node; missing:"
    local m
    for m in "${missing[@]}"; do log "  - ${m}"; done
    die "use \`scripts/control-plane up\` (no --node) for the stand-in, which runs pods as host processes"
  fi
  if [[ -e "$NODE_MARK" ]]; then
    die "a real node is already up (state $(cat "$NODE_MARK" 2>/dev/null)); one per machine: \`scripts/control-plane down $(cat "$NODE_MARK" 2>/dev/null)\` first"
  fi
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && die "bridge ${NODE_BRIDGE} exists but no node owns it; remove it (ip link del ${NODE_BRIDGE})"
  # `down` removes every chain matching NODE_CHAIN_RE; that is only right if none exists
  # before `up` (another Kubernetes node on this host, or a node that was never taken down).
  local ipt foreign
  for ipt in iptables ip6tables; do
    foreign="$("${ipt}-save" 2>/dev/null | awk -v re="$NODE_CHAIN_RE" '/^:/ { c = substr($1, 2); if (c ~ re) print c }' | head -n3 | tr '\n' ' ')"
    [[ -z "$foreign" ]] || die "${ipt} chains ${foreign}exist already (another Kubernetes node on this host, or a node never taken down); the node would remove them at \`down\`, so it refuses to start"
  done
  # The CIDRs must be free on this host: no route or address of anything else in them.
  local cidr
  for cidr in "$NODE_POD_CIDR" "$NODE_SERVICE_CIDR"; do
    local clash
    clash="$(ip -4 route show table all | awk -v c="$cidr" 'BEGIN { split(c, p, "/"); split(p[1], o, ".") }
      { n = $1; if (n == "local" || n == "broadcast") n = $2; split(n, q, "/"); split(q[1], r, ".")
        if (r[1] == o[1] && r[2] == o[2] && q[1] != "default") print }' | head -n1)"
    [[ -z "$clash" ]] || die "${cidr} is in use on this host (route: ${clash}); the node needs it free"
  done
}

# Client and serving certificates for the node's components, signed by the cluster CA
# (gen_certs' sign). Each authenticates as the identity RBAC's bootstrap policy expects.
node_certs() {
  # sign (defined by gen_certs) reads these from its caller.
  # shellcheck disable=SC2034 # read by sign and newkey
  local d="${STATE}/pki" ossl=(openssl)
  sign kube-scheduler "/CN=system:kube-scheduler" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign kube-proxy "/CN=system:kube-proxy" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign kubelet "/O=system:nodes/CN=system:node:${NODE_NAME}" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  sign kubelet-serving "/CN=${NODE_NAME}" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:${NODE_IP},DNS:${NODE_NAME}"
  # The apiserver's identity towards the kubelet (logs, exec, port-forward).
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  chmod 600 "${STATE}/pki/"*.key
}

read_sysctl() { cat "/proc/sys/$1" 2>/dev/null; }

# The bridge with NODE_IP, routes for the Service CIDR onto it, and the guard: packets
# from pods are forwarded only back onto the bridge (to pods, or DNATed to a pod), never
# to another interface, so nothing a pod sends leaves the machine.
node_network_up() {
  local d; d="$(node_dir)"
  mkdir -p "$d"
  : >"${d}/sysctls"
  local s
  for s in "${NODE_SYSCTLS[@]}"; do
    printf '%s %s\n' "$s" "$(read_sysctl "$s")" >>"${d}/sysctls"
  done
  printf '%s\n' "$STATE" >"$NODE_MARK"
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "${NODE_IP}/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Service IPs are routed onto the bridge: a Service with no endpoints then goes nowhere,
  # instead of out of the default route.
  ip route add "$NODE_SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  # Forwarding only for packets that arrive on the bridge (the per-interface switch; the
  # host-wide ip_forward stays as it is). Service traffic between pods is routed: pod ->
  # NODE_IP (DNAT) -> pod.
  printf '1\n' >"/proc/sys/net/ipv4/conf/${NODE_BRIDGE}/forwarding"
  # kube-proxy's DNAT must see bridged pod-to-pod packets (the replies of a Service call).
  printf '1\n' >/proc/sys/net/bridge/bridge-nf-call-iptables
  printf '1\n' >/proc/sys/net/bridge/bridge-nf-call-ip6tables
  # mangle, not filter: kube-proxy inserts ACCEPT rules at the top of filter FORWARD.
  iptables -t mangle -N "$NODE_GUARD_CHAIN"
  iptables -t mangle -A "$NODE_GUARD_CHAIN" -i "$NODE_BRIDGE" ! -o "$NODE_BRIDGE" -j DROP
  iptables -t mangle -I FORWARD 1 -j "$NODE_GUARD_CHAIN"
}

node_write_configs() {
  local d; d="$(node_dir)"
  mkdir -p "${d}/containerd" "${d}/cni/net.d" "${d}/cni/ipam" "${d}/kubelet" "${d}/pod-logs"
  cat >"${d}/containerd/config.toml" <<TOML
version = 2
root = "${d}/containerd/root"
state = "${d}/containerd/state"
[grpc]
  address = "$(containerd_sock)"
[ttrpc]
  address = "${d}/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "${d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Network namespaces live under the state dir, so \`down\` finds every one.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # Never ask for an OOM score below containerd's own: lowering it needs CAP_SYS_RESOURCE,
  # which some machines (containers, sandboxed VMs) withhold even from root, and the
  # kubelet asks for -998 for every pod sandbox.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "${CNI_BIN_DIR}"
    conf_dir = "${d}/cni/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
TOML
  # The bridge exists already (node_network_up); isGateway stays false so the plugin
  # neither re-addresses it nor turns on host-wide IP forwarding. host-local keeps its
  # leases under the state dir.
  cat >"${d}/cni/net.d/10-grpc-balancer.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "grpc-balancer-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${NODE_BRIDGE}",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${d}/cni/ipam",
        "ranges": [[{ "subnet": "${NODE_POD_CIDR}", "gateway": "${NODE_IP}" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
  local pki="${STATE}/pki"
  cat >"${d}/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_IP}
port: ${KUBELET_PORT}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${KUBELET_HEALTHZ_PORT}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki}/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: ${pki}/kubelet-serving.crt
tlsPrivateKeyFile: ${pki}/kubelet-serving.key
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$(containerd_sock)
clusterDNS: [${NODE_DNS_IP}]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podCIDR: ${NODE_POD_CIDR}
podLogsDir: ${d}/pod-logs
failSwapOn: false
serializeImagePulls: false
# No disk-pressure evictions on a shared build machine; images are never pulled anyway.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
shutdownGracePeriod: 0s
# The kubelet's own OOM score stays as it is (see restrict_oom_score_adj above).
oomScoreAdj: 0
YAML
  cat >"${d}/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${STATE}/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: ${NODE_NAME}
clusterCIDR: ${NODE_POD_CIDR}
bindAddress: ${NODE_IP}
healthzBindAddress: 127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT}
metricsBindAddress: 127.0.0.1:${KUBE_PROXY_METRICS_PORT}
# NodePorts only on the bridge address, never on the host's own interfaces or localhost.
nodePortAddresses: [${NODE_IP}/32]
iptables:
  localhostNodePorts: false
  minSyncPeriod: 0s
  syncPeriod: 30s
oomScoreAdj: 0
# 0 leaves the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
YAML
}

# Starts the node on a running control plane (APISERVER set by try_up).
node_up() {
  local pki="${STATE}/pki" d; d="$(node_dir)"
  KUBELET_PORT="$(pick_port)"; KUBELET_HEALTHZ_PORT="$(pick_port)"
  KUBE_PROXY_HEALTHZ_PORT="$(pick_port)"; KUBE_PROXY_METRICS_PORT="$(pick_port)"
  local sched_port; sched_port="$(pick_port)"
  write_kubeconfig "${STATE}/kube-scheduler.kubeconfig" "$APISERVER" kube-scheduler
  write_kubeconfig "${STATE}/kube-proxy.kubeconfig" "$APISERVER" kube-proxy
  write_kubeconfig "${STATE}/kubelet.kubeconfig" "$APISERVER" kubelet
  node_write_configs
  local kubectl=("${K8S_DIR}/bin/kubectl" --kubeconfig "${STATE}/kubeconfig" --request-timeout 5s)
  local rc=0

  local scfg="${STATE}/kube-scheduler.kubeconfig"
  start kube-scheduler "${K8S_NODE_DIR}/bin/kube-scheduler" \
    --kubeconfig "$scfg" --authentication-kubeconfig "$scfg" --authorization-kubeconfig "$scfg" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --profiling=false --v=1

  start containerd containerd --config "${d}/containerd/config.toml" --log-level warn
  wait_for "containerd" 30 containerd ctr --address "$(containerd_sock)" version || rc=$?
  ((rc == 0)) || return "$rc"
  ctr_k8s images import "${PAUSE_DIR}/pause.oci.tar" >/dev/null || { log "importing the pause image failed"; return 1; }
  ctr_k8s images import "${COREDNS_DIR}/coredns.oci.tar" >/dev/null || { log "importing the coredns image failed"; return 1; }

  start kubelet "${K8S_NODE_DIR}/bin/kubelet" \
    --config "${d}/kubelet/config.yaml" --kubeconfig "${STATE}/kubelet.kubeconfig" \
    --root-dir "${d}/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --node-labels "topology.kubernetes.io/zone=local" --v=1
  start kube-proxy "${K8S_NODE_DIR}/bin/kube-proxy" --config "${d}/kube-proxy.yaml" --v=1

  "${kubectl[@]}" apply -f - >/dev/null < <(sed -e "s#@COREDNS_IMAGE@#${COREDNS_IMAGE}#" -e "s#@DNS_IP@#${NODE_DNS_IP}#" \
    "${REPO_ROOT}/scripts/lib/coredns.yaml") || { log "applying CoreDNS failed"; return 1; }

  wait_for "node ${NODE_NAME} Ready" 60 kubelet \
    "${kubectl[@]}" wait --for=condition=Ready "node/${NODE_NAME}" --timeout 2s || rc=$?
  ((rc == 0)) || return "$rc"
  wait_for "kube-proxy /healthz" 30 kube-proxy curl -sf --max-time 2 "http://127.0.0.1:${KUBE_PROXY_HEALTHZ_PORT}/healthz" || rc=$?
  ((rc == 0)) || return "$rc"
  wait_for "CoreDNS answering for kubernetes.default" 60 kubelet node_dns_answers || rc=$?
  ((rc == 0)) || return "$rc"
  cat >>"${STATE}/info" <<INFO
NODE_IP=${NODE_IP}
POD_CIDR=${NODE_POD_CIDR}
SERVICE_CIDR=${NODE_SERVICE_CIDR}
DNS=${NODE_DNS_IP}
CONTAINERD=$(containerd_sock)
INFO
}

# The cluster DNS answers through its Service (kube-proxy's DNAT) with the apiserver's
# ClusterIP.
node_dns_answers() {
  [[ "$(dig +short +time=1 +tries=1 "@${NODE_DNS_IP}" kubernetes.default.svc.cluster.local A)" == 10.96.0.1 ]]
}

# kills every process whose command line names the state dir, i.e. the containerd shims
# too (their -address is our socket).
node_kill_leftovers() {
  local state="$1" p pids=()
  for p in /proc/[0-9]*; do
    [[ -r "${p}/cmdline" ]] || continue
    [[ "${p#/proc/}" == "$$" ]] && continue
    if tr '\0' ' ' <"${p}/cmdline" 2>/dev/null | grep -qF "${state}/node/"; then pids+=("${p#/proc/}"); fi
  done
  ((${#pids[@]})) || return 0
  kill -KILL "${pids[@]}" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do
    local any=0
    for p in "${pids[@]}"; do if running "$p"; then any=1; fi; done
    ((any)) || return 0
    sleep 0.1
  done
}

# Removes the iptables rules and chains the node made (NODE_CHAIN_RE), in both address
# families, leaving every other rule as it is: first the rules in other chains that jump
# to ours (by rule number, highest first, so the numbers stay valid), then our chains.
node_iptables_clean() {
  local ipt table chain num
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for table in filter nat mangle raw; do
      "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
      while read -r chain num; do
        "$ipt" -t "$table" -D "$chain" "$num" 2>/dev/null || true
      done < <("$ipt" -t "$table" -S 2>/dev/null | awk -v re="$NODE_CHAIN_RE" '
          $1 == "-A" && $2 !~ re {
            n[$2]++
            for (i = 3; i < NF; i++) if (($i == "-j" || $i == "-g") && $(i + 1) ~ re) { print $2, n[$2]; break }
          }' | sort -k1,1 -k2,2nr)
      local chains
      chains="$("$ipt" -t "$table" -S 2>/dev/null | awk -v re="$NODE_CHAIN_RE" '$1 == "-N" && $2 ~ re { print $2 }')"
      for chain in $chains; do "$ipt" -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $chains; do "$ipt" -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
}

# Removes the cgroups the kubelet made (cgroupfs driver, cgroup root /), deepest first.
node_cgroups_clean() {
  local dir
  while IFS= read -r dir; do rmdir "$dir" 2>/dev/null || true; done < <(
    find /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/kubepods.slice -depth -type d 2>/dev/null)
}

# Everything `node_up` made, in the order that lets each part go cleanly; every step is
# safe on a half-made node (a failed `up` runs it too).
node_down() {
  local state="$1" d="$1/node"
  [[ -d "$d" ]] || return 0
  STATE="$state"
  # The containers go by force (the state is thrown away, and a graceful stop through the
  # kubelet takes many seconds per pod); what a CNI DEL would have undone is removed below
  # directly: the network namespaces (and with them the veths), the leases (state dir),
  # portmap's chains (the iptables sweep) and libcni's cache.
  # kube-proxy removes its own rules; the sweep below catches the rest.
  if [[ -x "${K8S_NODE_DIR}/bin/kube-proxy" && -f "${d}/kube-proxy.yaml" ]]; then
    timeout 20 "${K8S_NODE_DIR}/bin/kube-proxy" --cleanup --v=0 >/dev/null 2>&1 || true
  fi
  local name
  for name in kube-proxy kubelet kube-scheduler; do stop_one "$state" "$name"; done
  local ids=() id
  if alive containerd; then
    mapfile -t ids < <(ctr_k8s containers ls -q 2>/dev/null)
    for id in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks rm -f "$id" >/dev/null 2>&1 || true; done
    for id in "${ids[@]}"; do ctr_k8s containers rm "$id" >/dev/null 2>&1 || true; done
  fi
  stop_one "$state" containerd
  node_kill_leftovers "$state"
  # Mounts under the state dir: container rootfs (overlay), sandbox /dev/shm, network
  # namespaces, the kubelet's volume tmpfs. Deepest first; lazy as a last resort.
  local m
  while IFS= read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done < <(
    awk -v s="$state/" 'index($5, s) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  node_cgroups_clean
  node_iptables_clean
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  # The kubelet links container logs into /var/log/containers whatever its root dir.
  local l
  for l in /var/log/containers/*.log; do
    if [[ -L "$l" && "$(readlink "$l")" == "${d}/"* ]]; then rm -f "$l"; fi
  done
  # libcni's cache of results, kept in /var/lib/cni whatever the config says: one file per
  # network (ours and containerd's loopback) and sandbox.
  for id in "${ids[@]}"; do
    rm -f "/var/lib/cni/results/grpc-balancer-node-${id}-"* "/var/lib/cni/results/cni-loopback-${id}-"* 2>/dev/null || true
  done
  if [[ -f "${d}/sysctls" ]]; then
    local key value
    while read -r key value; do
      if [[ -n "$value" && -w "/proc/sys/${key}" ]]; then printf '%s\n' "$value" >"/proc/sys/${key}" || true; fi
    done <"${d}/sysctls"
  fi
  if [[ -f "$NODE_MARK" && "$(cat "$NODE_MARK")" == "$state" ]]; then rm -f "$NODE_MARK"; fi
}
