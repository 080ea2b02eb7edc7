#!/usr/bin/env bash
# Stops or starts one service of a running environment, for fault tests:
#   hack/env-ctl.sh NAME stop SERVICE     (SIGKILL: the service dies as in a crash)
#   hack/env-ctl.sh NAME start SERVICE    (the same command line env-up.sh used)
#   hack/env-ctl.sh NAME pause SERVICE    (SIGSTOP: it hangs, holding its state)
#   hack/env-ctl.sh NAME resume SERVICE   (SIGCONT)
# SERVICE is one of etcd, postgres, consul, moto, kube-apiserver, or anything else
# started with start(). Consul runs in dev mode: a restarted agent comes back empty.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib/common.sh"

name="$1" action="$2" service="$3"
dir="$(env_dir "$name")"
[[ -f "$dir/pids" ]] || die "environment $name is not up"

case "$action" in
  stop)
    while read -r pid svc; do
      if [[ $svc == "$service" ]]; then
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$dir/pids"
    grep -v " $service\$" "$dir/pids" >"$dir/pids.new" || true
    mv "$dir/pids.new" "$dir/pids"
    ;;
  start)
    [[ -f "$dir/$service.cmd" ]] || die "no recorded command for $service"
    eval "cmd=($(cat "$dir/$service.cmd"))"
    start "$service" "${cmd[@]}"
    ;;
  pause | resume)
    signal=STOP
    [[ $action == resume ]] && signal=CONT
    while read -r pid svc; do
      if [[ $svc == "$service" ]]; then
        kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid"
      fi
    done <"$dir/pids"
    ;;
  *)
    die "usage: env-ctl.sh NAME stop|start|pause|resume SERVICE"
    ;;
esac
