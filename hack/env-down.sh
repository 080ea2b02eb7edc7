#!/usr/bin/env bash
# Stops every process of an environment started by env-up.sh (and any operator the
# demo or tests started in it) and removes its directory.
#
# usage: hack/env-down.sh [NAME]     (NAME defaults to "test")
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib/common.sh"
source "$here/lib/node.sh"

name="${1:-test}"
dir="$(env_dir "$name")"
[[ -d "$dir" ]] || exit 0

pids=()
if [[ -f "$dir/pids" ]]; then
  while read -r pid _; do pids+=("$pid"); done <"$dir/pids"
fi
# Anything else still holding the environment's files: operators, kubectl proxies.
while read -r pid; do pids+=("$pid"); done < <(pgrep -f -- "$dir" || true)

signal_all() {
  local sig="$1" pid
  for pid in "${pids[@]}"; do
    # Each service runs in its own session: signal the whole process group.
    kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
  done
}

# Whether any of the processes still runs (an exited child not yet reaped by its
# parent is a zombie: it holds nothing and counts as gone).
alive() {
  local pid state
  for pid in "${pids[@]}"; do
    state="$(ps -o stat= -p "$pid" 2>/dev/null || true)"
    if [[ -n $state && $state != Z* ]]; then return 0; fi
  done
  return 1
}

# A node's containers outlive the processes that started them: they go first.
[[ -f $dir/netns ]] && node_stop_containers
if ((${#pids[@]})); then
  signal_all TERM
  deadline=$((SECONDS + 5))
  while alive && ((SECONDS < deadline)); do sleep 0.2; done
  if alive; then
    # kube-apiserver drains for a long time on SIGTERM; a throw-away environment
    # has nothing worth draining for.
    signal_all KILL
    sleep 0.5
  fi
fi
[[ -f $dir/netns ]] && node_remove
rm -rf "$dir"
log "environment $name is down"
