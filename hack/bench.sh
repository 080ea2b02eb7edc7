#!/usr/bin/env bash
# `make bench`, `make bench-drift`, `make bench-restart`: a throw-away environment, one
# benchmark, and down again. Usage: hack/bench.sh <converge|drift|restart> <entries>
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
bench="${1:-converge}"
entries="${2:-1000}"
cargo bench --locked --bench "$bench" --no-run
env_file="$(hack/env-up.sh bench)"
trap 'hack/env-down.sh bench' EXIT
SUMMIT_ENV_FILE="$env_file" cargo bench --locked --bench "$bench" -- --entries "$entries"
