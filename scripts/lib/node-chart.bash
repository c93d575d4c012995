# shellcheck shell=bash
# The set-up the measurements on the real node share (scripts/measure-discovery,
# scripts/chaos, scripts/soak): the images, the node lock, the node itself with the
# images loaded, and the chart installed with the local operator and proxy images.
#
# node_chart_up WHO IMAGES [helm --set args...] — sets IMAGE_TAG, NODE_STATE and
# RELEASE_NS; the caller's EXIT trap must call node_chart_down. IMAGES empty: build them
# into target/images (dev profile, or GRPC_BALANCER_IMAGE_PROFILE).

node_chart_log() { printf '[%s] %s\n' "$NODE_CHART_WHO" "$*" >&2; }

node_chart_up() {
  NODE_CHART_WHO="$1"
  local images="$2"
  shift 2
  command -v python3 >/dev/null || { node_chart_log "python3 is missing (apt-get install python3)"; exit 1; }
  IMAGE_TAG="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)"
  scripts/control-plane install
  if [[ -z "$images" ]]; then
    images="${CARGO_TARGET_DIR:-$PWD/target}/images"
    node_chart_log "building the images (dev profile) into ${images}"
    scripts/install-image-deps
    CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}" scripts/build-images --out "$images" \
      --profile "${GRPC_BALANCER_IMAGE_PROFILE:-dev}" >/dev/null
  fi
  local name
  for name in operator proxy greeter load-client; do
    [[ -f "${images}/grpc-balancer-${name}.oci.tar" ]] || {
      node_chart_log "missing ${images}/grpc-balancer-${name}.oci.tar; run scripts/build-images --out ${images}"
      exit 1
    }
  done

  # shellcheck source=scripts/lib/node-lock.bash
  source scripts/lib/node-lock.bash
  hold_node_lock "$NODE_CHART_WHO"

  local kubeconfig
  kubeconfig="$(scripts/control-plane up --node --owner-pid $$)"
  NODE_STATE="$(dirname "$kubeconfig")"
  eval "$(scripts/control-plane env "$kubeconfig")"
  scripts/control-plane load-images "$NODE_STATE" "${images}/grpc-balancer-operator.oci.tar" \
    "${images}/grpc-balancer-proxy.oci.tar" "${images}/grpc-balancer-greeter.oci.tar" \
    "${images}/grpc-balancer-load-client.oci.tar" 2>/dev/null

  RELEASE_NS=grpc-balancer
  kubectl create namespace "$RELEASE_NS" >/dev/null
  kubectl label namespace "$RELEASE_NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
  node_chart_log "helm install (2 operator replicas, push discovery on, as the chart's defaults${*:+; $*})"
  helm install grpc-balancer charts/grpc-balancer --namespace "$RELEASE_NS" \
    --set operator.image.repository=localhost/grpc-balancer-operator --set operator.image.tag="$IMAGE_TAG" \
    --set operator.image.pullPolicy=Never \
    --set proxy.image.repository=localhost/grpc-balancer-proxy --set proxy.image.tag="$IMAGE_TAG" \
    --set proxy.image.pullPolicy=Never "$@" --wait --timeout 180s >/dev/null
}

node_chart_down() {
  [[ -n "${NODE_STATE:-}" ]] && scripts/control-plane down "$NODE_STATE" >/dev/null 2>&1
  return 0
}
