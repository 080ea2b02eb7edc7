#!/usr/bin/env bash
# Everything the project checks, as `make test` and CI run it: tools (cached) →
# environment up → fmt, clippy, every test → environment down → the end-to-end tests on
# a node (hack/e2e.sh). Exits non-zero on any
# failure and leaves no process behind.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib/common.sh

started=$SECONDS
hack/tools/build.sh >/dev/null
log "tools ready after $((SECONDS - started))s"

log "lint: cargo fmt --check, cargo clippy -D warnings"
cargo fmt --check
cargo clippy --all-targets --all-features --locked -- -D warnings
# Build the tests before the environment is up, so that the environment's lifetime
# is the test run's alone.
cargo test --all-targets --locked --no-run

env_file="$(hack/env-up.sh test)"
dir="$(env_dir test)"
kept="$(mktemp)"
on_exit() {
  local status=$?
  if ((status != 0)); then
    # The environment and its logs go away with env-down: show the operators' last
    # words first, so a failure in CI can be read.
    local f
    for f in "$dir"/operator-*.log; do
      [[ -f $f ]] || continue
      echo "==> last lines of $f" >&2
      tail -n 40 "$f" >&2
    done
  fi
  hack/env-down.sh test
  failures "$kept"
  rm -f "$kept"
  # make test promises to leave nothing running.
  if pgrep -af -- "$dir" >&2; then
    log "error: the processes above outlived the environment"
    exit 1
  fi
}
trap on_exit EXIT
log "environment up after $((SECONDS - started))s"

SUMMIT_ENV_FILE="$env_file" tested "$kept" cargo test --all-targets --locked --no-fail-fast
# The apiserver-only environment goes before the node's comes: one at a time.
trap - EXIT
on_exit
log "end-to-end: the chart installed onto a node"
hack/e2e.sh
log "make test passed in $((SECONDS - started))s"
