#!/usr/bin/env bash
# Brings up a throw-away control plane and its backends for tests and the demo:
# etcd + kube-apiserver (RBAC, ValidatingAdmissionPolicy and MutatingAdmissionPolicy on, TLS on loopback,
# static-token users), PostgreSQL, a Consul dev agent, moto's AWS server and Prometheus.
# Waits until each answers, then writes $dir/env with what tests and the demo read.
# With --node, also a node that runs pods (hack/lib/node.sh): the services then listen
# on the host's end of the node's wire, where pods reach them.
#
# usage: hack/env-up.sh [NAME] [--node]   (NAME defaults to "test"; prints the env file path)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/lib/common.sh"
source "$here/lib/node.sh"
source "$here/lib/images.sh"

name=test
with_node=false
for arg in "$@"; do
  case "$arg" in
    --node) with_node=true ;;
    -*) die "unknown option $arg" ;;
    *) name="$arg" ;;
  esac
done
dir="$(env_dir "$name")"
if [[ -f "$dir/pids" ]]; then
  log "environment $name is already up; stopping it first"
  "$here/env-down.sh" "$name"
fi
rm -rf "$dir"
mkdir -p "$dir"
# A half-started environment is worse than none: stop whatever started on failure.
on_failure() {
  local status=$? kept="$SUMMIT_ENV_ROOT/$name-failed"
  ((status != 0)) || return 0
  rm -rf "$kept"
  mkdir -p "$kept"
  cp "$dir"/*.log "$kept/" 2>/dev/null || true
  log "env-up failed; its logs are kept in $kept"
  "$here/env-down.sh" "$name"
}
trap on_failure EXIT
chmod 755 "$dir"

bin="$("$here/tools/build.sh")"
export PATH="$bin:$PATH"

listen_ip=127.0.0.1
listen_ips=127.0.0.1
if $with_node; then
  node_packages
  images=("$(pause_image)" "$(busybox_image)")
  node_network
  listen_ip="$host_ip"
  listen_ips="127.0.0.1 $host_ip"
fi

etcd_port="$(free_port)"
etcd_peer_port="$(free_port)"
api_port="$(free_port)"
pg_port="$(free_port)"
consul_port="$(free_port)"
moto_port="$(free_port)"
prometheus_port="$(free_port)"

log "starting etcd on 127.0.0.1:$etcd_port"
start etcd "$bin/etcd" \
  --name summit-test \
  --data-dir "$dir/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "summit-test=http://127.0.0.1:$etcd_peer_port" \
  --unsafe-no-fsync \
  --log-level warn

# fsync=off is safe here: fault tests kill processes, never the machine, and the OS
# keeps what was written. Commits stay synchronous, or a killed server loses them.
log "starting PostgreSQL on 127.0.0.1:$pg_port"
pg="$(pg_bindir)"
cd "$dir"  # the postgres user must be able to enter the working directory
mkdir -p "$dir/postgres"
if [[ $(id -u) -eq 0 ]]; then chown postgres: "$dir/postgres"; fi
"${pg_user[@]}" "$pg/initdb" -D "$dir/postgres/data" -U summit -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
# The node's pods come over the wire.
$with_node && echo "host all all 10.0.0.0/8 trust" >>"$dir/postgres/data/pg_hba.conf"
start postgres "${pg_user[@]}" "$pg/postgres" -D "$dir/postgres/data" \
  -c listen_addresses="${listen_ips// /,}" -p "$pg_port" -k "$dir/postgres" \
  -c fsync=off -c full_page_writes=off

# Consul as production runs it: HTTPS only, and ACLs that deny whatever a token does
# not allow. The operator and tests hold the management token.
if $with_node; then
  "$here/lib/apiserver-certs.sh" "$dir" "$host_ip" "$service_ip"
else
  "$here/lib/apiserver-certs.sh" "$dir"
fi
consul_token="$(python3 -c 'import uuid; print(uuid.uuid4())')"
printf '%s' "$consul_token" >"$dir/consul-token"
chmod 600 "$dir/consul-token"
log "starting Consul on https://$listen_ip:$consul_port (ACLs on)"
start consul "$bin/consul" agent -dev -bind 127.0.0.1 -client "$listen_ips" \
  -hcl "ports { http = -1, https = $consul_port, dns = -1, grpc = -1, grpc_tls = -1, serf_lan = $(free_port), serf_wan = $(free_port), server = $(free_port) }" \
  -hcl "tls { defaults { ca_file = \"$dir/pki/ca.crt\", cert_file = \"$dir/pki/consul.crt\", key_file = \"$dir/pki/consul.key\", verify_incoming = false } }" \
  -hcl "acl { enabled = true, default_policy = \"deny\", tokens { initial_management = \"$consul_token\" } }" \
  -log-level warn

log "starting moto (AWS Secrets Manager) on $listen_ip:$moto_port"
start moto python3 -m moto.server -H "$listen_ip" -p "$moto_port"

if $with_node; then
  # Kubelets and pods as a cluster has them: the Node authorizer, service-account
  # tokens in pods, the kubernetes Service pointing at this apiserver, and a client
  # certificate for logs and exec.
  node_flags=(
    --authorization-mode Node,RBAC
    --enable-admission-plugins ValidatingAdmissionPolicy,MutatingAdmissionPolicy,NodeRestriction
    --service-cluster-ip-range "$service_cidr"
    --endpoint-reconciler-type lease
    --kubelet-client-certificate "$dir/pki/kubelet-client.crt"
    --kubelet-client-key "$dir/pki/kubelet-client.key"
    --kubelet-preferred-address-types InternalIP
  )
else
  # No controller manager makes service accounts, and nothing runs pods.
  node_flags=(
    --authorization-mode RBAC
    --enable-admission-plugins ValidatingAdmissionPolicy,MutatingAdmissionPolicy
    --disable-admission-plugins ServiceAccount
    --service-cluster-ip-range 10.96.0.0/24
    --endpoint-reconciler-type none
  )
fi
log "starting kube-apiserver on https://$listen_ip:$api_port"
wait_until 60 etcd curl -sf "http://127.0.0.1:$etcd_port/health"
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address "$listen_ip" --advertise-address "$listen_ip" --secure-port "$api_port" \
  --tls-cert-file "$dir/pki/apiserver.crt" --tls-private-key-file "$dir/pki/apiserver.key" \
  --client-ca-file "$dir/pki/ca.crt" \
  --token-auth-file "$dir/tokens.csv" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-account-key-file "$dir/pki/sa.pub" \
  --service-account-signing-key-file "$dir/pki/sa.key" \
  --allow-privileged=true \
  "${node_flags[@]}" \
  --v 0

admin_token="$(awk -F, '$2 == "admin" { print $1 }' "$dir/tokens.csv")"
cat >"$dir/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: summit-$name
    cluster:
      server: https://$listen_ip:$api_port
      certificate-authority: $dir/pki/ca.crt
users:
  - name: admin
    user:
      token: $admin_token
contexts:
  - name: summit-$name
    context: {cluster: summit-$name, user: admin}
current-context: summit-$name
KUBECONFIG

# Prometheus scrapes whatever tests list in $dir/prometheus/targets (file discovery)
# and, on a node, every pod annotated prometheus.io/scrape=true (as most clusters'
# Prometheus does), every second, with the pod's namespace and app as labels. It
# answers the operator's canary metric queries.
mkdir -p "$dir/prometheus/targets"
{
  cat <<PROMETHEUS
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: tests
    file_sd_configs: [{files: ["$dir/prometheus/targets/*.json"], refresh_interval: 1s}]
PROMETHEUS
  if $with_node; then cat <<PROMETHEUS
  - job_name: pods
    fallback_scrape_protocol: PrometheusText0.0.4
    kubernetes_sd_configs: [{role: pod, kubeconfig_file: "$dir/kubeconfig"}]
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_pod_label_app], target_label: app}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
PROMETHEUS
  fi
} >"$dir/prometheus/prometheus.yml"
log "starting Prometheus on $listen_ip:$prometheus_port"
start prometheus "$bin/prometheus" --config.file="$dir/prometheus/prometheus.yml" \
  --storage.tsdb.path="$dir/prometheus/data" --web.listen-address="$listen_ip:$prometheus_port"

export KUBECONFIG="$dir/kubeconfig"
wait_until 90 kube-apiserver kubectl get --raw /readyz
wait_until 60 PostgreSQL "$pg/pg_isready" -h 127.0.0.1 -p "$pg_port" -U summit
wait_until 60 Consul curl -sf --cacert "$dir/pki/ca.crt" "https://$listen_ip:$consul_port/v1/status/leader"
wait_until 60 moto curl -sf "http://$listen_ip:$moto_port/moto-api/"
wait_until 60 Prometheus curl -sf "http://$listen_ip:$prometheus_port/-/ready"
"$pg/psql" -h 127.0.0.1 -p "$pg_port" -U summit -d postgres -qc "CREATE DATABASE summit" >/dev/null
if $with_node; then
  node_containerd
  node_load_images "${images[@]}"
  node_kubelet
  node_control_loops
  node_ready
else
  # The chart's CRDs, roles and admission policy, as a cluster would have them; the
  # operator itself runs from the build. (On a node, the chart is installed whole by
  # whoever uses it, as a user would.)
  # Secrets are granted per namespace: summit-secrets is the one the RBAC test checks.
  kubectl create namespace summit-secrets >/dev/null
  helm upgrade --install summit-config "$here/../charts/summit-config" \
    --namespace summit-system --create-namespace --set operator.enabled=false \
    --set 'operator.secretNamespaces={summit-secrets}' >/dev/null
fi

{
  echo "# written by hack/env-up.sh $name; read by tests and the demo"
  echo "SUMMIT_ENV_NAME=$name"
  echo "SUMMIT_ENV_DIR=$dir"
  echo "SUMMIT_TOOLS_BIN=$bin"
  echo "KUBECONFIG=$dir/kubeconfig"
  echo "KUBE_APISERVER=https://$listen_ip:$api_port"
  echo "KUBE_CA_FILE=$dir/pki/ca.crt"
  echo "DATABASE_URL=postgres://summit@$listen_ip:$pg_port/summit"
  echo "CONSUL_HTTP_ADDR=https://$listen_ip:$consul_port"
  echo "CONSUL_HTTP_TOKEN_FILE=$dir/consul-token"
  echo "CONSUL_CACERT=$dir/pki/ca.crt"
  echo "AWS_ENDPOINT_URL=http://$listen_ip:$moto_port"
  echo "AWS_REGION=us-east-1"
  echo "AWS_ACCESS_KEY_ID=testing"
  echo "AWS_SECRET_ACCESS_KEY=testing"
  echo "PROMETHEUS_URL=http://$listen_ip:$prometheus_port"
  echo "PROMETHEUS_TARGETS=$dir/prometheus/targets"
  if $with_node; then
    echo "SUMMIT_NODE=$NODE_NAME"
    echo "SUMMIT_NODE_CONTAINERD=$dir/node/containerd.sock"
  fi
  # The users tests act as; the node's components keep their tokens to themselves.
  while IFS=, read -r token user _; do
    [[ $user == *:* ]] || echo "SUMMIT_TOKEN_${user^^}=$token"
  done <"$dir/tokens.csv"
} >"$dir/env"
log "environment $name is up: source $dir/env"
echo "$dir/env"
