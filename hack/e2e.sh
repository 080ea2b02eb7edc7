#!/usr/bin/env bash
# The end-to-end tests (tests/installed.rs): an environment with a node, the operator's
# image built from the debug build the other tests already made and loaded into the
# node, then the tests that install the chart onto it. Leaves nothing behind: no
# process, mount or network namespace.
#
# usage: hack/e2e.sh [cargo test arguments...]
#   SUMMIT_E2E_IMAGE=release: test the release image `make image` builds instead (a
#   release build: minutes longer).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib/common.sh

started=$SECONDS
cargo test --locked --features e2e --test installed --test on_the_node --test canary --no-run
env_file="$(hack/env-up.sh e2e --node)"
dir="$(env_dir e2e)"
kept="$(mktemp)"
on_exit() {
  local status=$?
  if ((status != 0)); then
    local f
    for f in "$dir"/*.log; do
      [[ -f $f ]] || continue
      echo "==> last lines of $f" >&2
      tail -n 20 "$f" >&2
    done
    set -a
    source "$env_file"
    set +a
    echo "==> the operator's pods" >&2
    "$SUMMIT_TOOLS_BIN/kubectl" -n summit-system logs -l app.kubernetes.io/name=summit-config \
      --tail 40 --prefix >&2 2>&1 || true
  fi
  hack/env-down.sh e2e
  failures "$kept"
  rm -f "$kept"
  # Nothing of the node may outlive it: processes, mounts, its network namespace.
  if pgrep -af -- "$dir" >&2 || findmnt -rn -o TARGET | grep -F -- "$dir/" >&2 \
    || ip netns list | grep -w summit-e2e >&2; then
    log "error: the above outlived the environment"
    exit 1
  fi
}
trap on_exit EXIT
if [[ ${SUMMIT_E2E_IMAGE:-debug} == release ]]; then
  hack/image.sh >/dev/null
else
  hack/image.sh --debug >/dev/null
fi
log "node and image ready after $((SECONDS - started))s"
SUMMIT_ENV_FILE="$env_file" tested "$kept" \
  cargo test --locked --features e2e --test installed --test on_the_node --test canary "$@"
log "end-to-end tests passed in $((SECONDS - started))s"
