#!/usr/bin/env bash
# `make demo`: a local control plane with a node, the operator's image built here, the
# chart installed onto the node with helm as a user would (two replicas electing a
# leader, talking to the environment's PostgreSQL, Consul and moto), and the examples
# applied; ends by listing them with `kubectl get summit -A` and leaves everything
# running until `make demo-down`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib/common.sh

cargo build --locked --bin summit-config
env_file="$(hack/env-up.sh demo --node)"
set -a
source "$env_file"
set +a
export PATH="$SUMMIT_TOOLS_BIN:$PATH"
hack/image.sh --debug >/dev/null

log "preparing summit-system: the Secrets and ConfigMap the chart's values name"
kubectl create namespace summit-system >/dev/null
kubectl -n summit-system create secret generic summit-postgres \
  --from-literal=url="$DATABASE_URL" >/dev/null
kubectl -n summit-system create secret generic summit-consul \
  --from-file=token="$CONSUL_HTTP_TOKEN_FILE" >/dev/null
kubectl -n summit-system create configmap summit-consul-ca \
  --from-file=ca.crt="$CONSUL_CACERT" >/dev/null
kubectl -n summit-system create secret generic summit-aws \
  --from-literal=AWS_ACCESS_KEY_ID=testing --from-literal=AWS_SECRET_ACCESS_KEY=testing >/dev/null
# The examples' namespace comes first: the chart grants the operator Secrets there.
kubectl apply -f examples/00-namespace.yaml >/dev/null

log "helm install summit-config (the image built here, two replicas)"
cat >"$SUMMIT_ENV_DIR/values.yaml" <<VALUES
operator:
  image: {repository: localhost/summit-config/summit-config, tag: dev, pullPolicy: Never}
  secretNamespaces: [summit-demo]
  extraEnv:
    - {name: AWS_REGION, value: us-east-1}
    - {name: AWS_ENDPOINT_URL, value: "$AWS_ENDPOINT_URL"}
    - {name: AWS_ACCESS_KEY_ID, valueFrom: {secretKeyRef: {name: summit-aws, key: AWS_ACCESS_KEY_ID}}}
    - {name: AWS_SECRET_ACCESS_KEY, valueFrom: {secretKeyRef: {name: summit-aws, key: AWS_SECRET_ACCESS_KEY}}}
postgres:
  urlSecret: {name: summit-postgres, key: url}
consul:
  address: "$CONSUL_HTTP_ADDR"
  tokenSecret: {name: summit-consul, key: token}
  caConfigMap: {name: summit-consul-ca, key: ca.crt}
prometheus:
  url: "$PROMETHEUS_URL"
VALUES
helm install summit-config charts/summit-config --namespace summit-system \
  --values "$SUMMIT_ENV_DIR/values.yaml" --wait --timeout 3m >/dev/null

log "applying examples/"
# The admission policies learn a new CRD's schema a moment after it is established;
# until then they answer ServiceUnavailable.
wait_until 60 "applying examples/" kubectl apply --server-side -f examples/
for kind in configentries configchanges secretrotationpolicies driftchecks; do
  kubectl wait "$kind" --all -A --for jsonpath='{.status.observedGeneration}' --timeout 60s >/dev/null
done

echo
kubectl -n summit-system get pods,lease
echo
kubectl get summit -A
echo
cat <<DONE
The operator runs on the node, installed by helm; the environment keeps running.
  export KUBECONFIG=$KUBECONFIG     # to use kubectl and helm on it
  kubectl -n summit-system logs -l app.kubernetes.io/name=summit-config -f
Stop everything with: make demo-down
DONE
