# shellcheck shell=bash
# The machine-wide lock of the real node: there is one node per machine (fixed bridge,
# CIDRs and iptables chains), so every script that brings one up holds this lock from
# before `up --node` until after `down`. A second user waits for the first, with a
# message, instead of both breaking.
#
# hold_node_lock WHO — takes the lock on a file descriptor this shell keeps open; it is
# released when the shell and every process that inherited the descriptor (the node's
# own, until `down` stops them) have exited.

NODE_LOCK="${GRPC_BALANCER_NODE_LOCK:-/tmp/grpc-balancer-node.lock}"

hold_node_lock() {
  local who="$1" holder waited=$SECONDS
  exec {NODE_LOCK_FD}>>"$NODE_LOCK"
  if ! flock -n "$NODE_LOCK_FD"; then
    holder="$(cat "$NODE_LOCK" 2>/dev/null || true)"
    printf '[%s] the real node is in use (%s holds %s); waiting for it to finish...\n' \
      "$who" "${holder:-another run}" "$NODE_LOCK" >&2
    flock "$NODE_LOCK_FD"
    printf '[%s] got the node after waiting %ss\n' "$who" "$((SECONDS - waited))" >&2
  fi
  printf '%s (pid %s, since %s)\n' "$who" "$$" "$(date -u +%H:%M:%S)" >"$NODE_LOCK"
}
