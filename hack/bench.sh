#!/usr/bin/env bash
# `make bench`: a throw-away environment, the converge benchmark, and down again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
entries="${1:-1000}"
cargo bench --locked --bench converge --no-run
env_file="$(hack/env-up.sh bench)"
trap 'hack/env-down.sh bench' EXIT
SUMMIT_ENV_FILE="$env_file" cargo bench --locked --bench converge -- --entries "$entries"
