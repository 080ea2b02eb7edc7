#!/usr/bin/env bash
# Everything the project checks, as `make test` and CI run it: tools (cached) →
# environment up → fmt, clippy, every test → environment down. Exits non-zero on any
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
cargo clippy --all-targets --locked -- -D warnings
# Build the tests before the environment is up, so that the environment's lifetime
# is the test run's alone.
cargo test --all-targets --locked --no-run

env_file="$(hack/env-up.sh test)"
trap 'hack/env-down.sh test' EXIT
log "environment up after $((SECONDS - started))s"

SUMMIT_ENV_FILE="$env_file" cargo test --all-targets --locked --no-fail-fast
log "make test passed in $((SECONDS - started))s"
