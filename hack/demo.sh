#!/usr/bin/env bash
# `make demo`: a local control plane and backends, the CRDs, the operator, and the
# examples applied; ends by listing them with `kubectl get summit -A` and leaves
# everything running until `make demo-down`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib/common.sh

cargo build --locked --bin summit-config
env_file="$(hack/env-up.sh demo)"
set -a
source "$env_file"
set +a
dir="$SUMMIT_ENV_DIR"
export PATH="$SUMMIT_TOOLS_BIN:$PATH"

log "installing the CRDs"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for condition=Established --timeout 60s -f crds/ >/dev/null

http_port="$(free_port)"
log "starting the operator (log: $dir/operator.log, metrics: http://127.0.0.1:$http_port/metrics)"
# As the chart runs it: config ids under their namespace's name.
start operator target/debug/summit-config operator \
  --kubeconfig "$KUBECONFIG" --http-addr "127.0.0.1:$http_port" \
  --config-id-prefix '{namespace}/'
wait_until 60 operator curl -sf "http://127.0.0.1:$http_port/readyz"

log "applying examples/"
# The admission policies learn a new CRD's schema a moment after it is established;
# until then they answer ServiceUnavailable.
wait_until 60 "applying examples/" kubectl apply --server-side -f examples/
for kind in configentries configchanges secretrotationpolicies driftchecks; do
  kubectl wait "$kind" --all -A --for jsonpath='{.status.observedGeneration}' --timeout 60s >/dev/null
done

echo
kubectl get summit -A
echo
cat <<DONE
The operator keeps running against this control plane.
  export KUBECONFIG=$KUBECONFIG     # to use kubectl on it
  tail -f $dir/operator.log
Stop everything with: make demo-down
DONE
