#!/usr/bin/env bash
# `make bench` and `make bench-<name>`: a throw-away environment, benchmarks, and down
# again. Usage: hack/bench.sh <suite|converge|latency|restart|secrets|drift> <entries>
# `suite` runs converge, latency, restart and secrets one after another in the same
# environment: the run the README's figures come from.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
bench="${1:-suite}"
entries="${2:-1000}"
if [[ "$bench" == suite ]]; then
  benches=(converge latency restart secrets)
else
  benches=("$bench")
fi
for one in "${benches[@]}"; do
  cargo bench --locked --bench "$one" --no-run
done
env_file="$(hack/env-up.sh bench)"
trap 'hack/env-down.sh bench' EXIT
echo "bench run of $(git rev-parse --short HEAD) on $(date -u +%Y-%m-%d)"
for one in "${benches[@]}"; do
  SUMMIT_ENV_FILE="$env_file" SUMMIT_OPERATOR_LOG="${SUMMIT_OPERATOR_LOG:-info}" \
    cargo bench --locked --bench "$one" -- --entries "$entries"
done
