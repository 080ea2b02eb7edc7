# A node for an environment: its own network namespace, joined to the host by a veth
# pair like a second machine on a wire, running containerd (Debian's, with runc),
# kubelet, kube-proxy, kube-controller-manager and kube-scheduler against the
# environment's apiserver. Everything it makes lives under $dir/node or in the
# namespace, so env-down.sh removes it whole. Source it; do not run it.
#
# The caller sets $dir, $name and $bin. node_network must run before the host's
# services start: they listen on $host_ip, the host's end of the wire.

NODE_NAME=summit-node
# The Debian packages the node needs; node_packages installs what is missing.
NODE_PACKAGES=(containerd runc containernetworking-plugins buildah busybox-static iptables)

# Installs the node's Debian packages when missing, as .ci/run installs PostgreSQL.
node_packages() {
  local missing=() package
  for package in "${NODE_PACKAGES[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) -eq 0 ]] || die "the node needs ${missing[*]}: apt-get install them (as root)"
  log "installing ${missing[*]} from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# Picks the environment's addresses from its name, so that two environments with nodes
# (the demo and the tests) can run side by side:
#   $host_ip/$node_ip  the wire (10.200.N.0/30), host end and node end
#   $pod_cidr          the node's pods (10.244.N.0/24)
#   $service_cidr      Services' cluster IPs (10.96.N.0/24)
node_addresses() {
  local n
  n=$(($(cksum <<<"$name" | cut -d' ' -f1) % 250 + 1))
  netns="summit-$name"
  veth_host="sc$n-host"
  veth_node="sc$n-node"
  host_ip="10.200.$n.1"
  node_ip="10.200.$n.2"
  pod_cidr="10.244.$n.0/24"
  service_cidr="10.96.$n.0/24"
  service_ip="10.96.$n.1"
}

# The namespace and the wire; the host routes the node's pods over it.
node_network() {
  node_addresses
  if ip netns list | grep -qw "$netns" || ip link show "$veth_host" >/dev/null 2>&1; then
    die "network namespace $netns or link $veth_host exists: hack/env-down.sh $name first"
  fi
  ip netns add "$netns"
  echo "$netns" >"$dir/netns"
  ip link add "$veth_host" type veth peer name "$veth_node"
  ip link set "$veth_node" netns "$netns"
  ip addr add "$host_ip/30" dev "$veth_host"
  ip link set "$veth_host" up
  in_node ip addr add "$node_ip/30" dev "$veth_node"
  in_node ip link set "$veth_node" up
  in_node ip link set lo up
  in_node ip route add default via "$host_ip"
  ip route add "$pod_cidr" via "$node_ip"
}

# Runs a command inside the node. nsenter joins the network namespace alone: `ip netns
# exec` would also mount a sysfs of its own, hiding the host's cgroups from kubelet.
in_node() { nsenter --net="/var/run/netns/$netns" -- "$@"; }

# A kubeconfig for the static-token user $1 (a line of tokens.csv), talking to the
# apiserver over the wire.
node_kubeconfig() {
  local user="$1" file="$dir/node/$2.kubeconfig" token
  token="$(awk -F, -v user="$user" '$2 == user { print $1 }' "$dir/tokens.csv")"
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: summit-$name
    cluster: {server: "https://$host_ip:$api_port", certificate-authority: "$dir/pki/ca.crt"}
users:
  - name: $2
    user: {token: "$token"}
contexts:
  - name: $2
    context: {cluster: summit-$name, user: $2}
current-context: $2
KUBECONFIG
  printf '%s' "$file"
}

node_containerd() {
  local root="$dir/node"
  mkdir -p "$root/cni"
  cat >"$root/cni/10-summit.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "summit",
  "plugins": [
    {
      "type": "bridge", "bridge": "summit0", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$root/cni-ipam",
        "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  # restrict_oom_score_adj: the machine lacks CAP_SYS_RESOURCE; native snapshots: no
  # overlay inside this machine; runc with cgroupfs; every path under $root.
  cat >"$root/containerd.toml" <<TOML
version = 2
root = "$root/containerd/root"
state = "$root/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.opt"]
[grpc]
  address = "$root/containerd.sock"
[ttrpc]
  address = "$root/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$root/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$root/cni"
TOML
  log "starting containerd in the node"
  start containerd nsenter --net="/var/run/netns/$netns" -- containerd --config "$root/containerd.toml"
  wait_until 30 containerd ctr --address "$root/containerd.sock" version
}

# Loads the images the node runs (an OCI archive each) into containerd's k8s.io namespace.
node_load_images() {
  local archive
  for archive in "$@"; do
    ctr --address "$dir/node/containerd.sock" -n k8s.io images import "$archive" >/dev/null
  done
}

node_kubelet() {
  local root="$dir/node" kubeconfig
  kubeconfig="$(node_kubeconfig "system:node:$NODE_NAME" kubelet)"
  # What this machine lacks (cgroup v2, CAP_SYS_RESOURCE, swap accounting) switched off.
  cat >"$root/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$dir/pki/ca.crt"}
authorization: {mode: Webhook}
containerRuntimeEndpoint: "unix://$root/containerd.sock"
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
evictionHard: {}
localStorageCapacityIsolation: false
failSwapOn: false
readOnlyPort: 0
serializeImagePulls: false
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
registerNode: true
YAML
  log "starting kubelet as node $NODE_NAME ($node_ip)"
  start kubelet nsenter --net="/var/run/netns/$netns" -- "$bin/kubelet" \
    --config "$root/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --root-dir "$root/kubelet" --cert-dir "$root/kubelet-pki" \
    --hostname-override "$NODE_NAME" --node-ip "$node_ip" --v 1
}

# kube-controller-manager (Deployments, ReplicaSets, garbage collection, namespaces,
# service accounts and their tokens), kube-scheduler and kube-proxy, in the node.
node_control_loops() {
  local root="$dir/node"
  log "starting kube-controller-manager, kube-scheduler and kube-proxy in the node"
  start kube-controller-manager nsenter --net="/var/run/netns/$netns" -- "$bin/kube-controller-manager" \
    --kubeconfig "$(node_kubeconfig system:kube-controller-manager kube-controller-manager)" \
    --service-account-private-key-file "$dir/pki/sa.key" --root-ca-file "$dir/pki/ca.crt" \
    --use-service-account-credentials --leader-elect=false \
    --cluster-cidr "$pod_cidr" --service-cluster-ip-range "$service_cidr" \
    --bind-address 127.0.0.1 --v 0
  start kube-scheduler nsenter --net="/var/run/netns/$netns" -- "$bin/kube-scheduler" \
    --kubeconfig "$(node_kubeconfig system:kube-scheduler kube-scheduler)" \
    --leader-elect=false --bind-address 127.0.0.1 --v 0
  cat >"$root/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$(node_kubeconfig system:kube-proxy kube-proxy)"}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: "$pod_cidr"
conntrack: {maxPerCore: 0}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
YAML
  start kube-proxy nsenter --net="/var/run/netns/$netns" -- "$bin/kube-proxy" --config "$root/kube-proxy.yaml" --v 0
}

node_untainted() {
  [[ -z $(kubectl get node "$NODE_NAME" -o jsonpath='{.spec.taints}') ]]
}

# Waits until the node is Ready, schedulable, and namespaces have service accounts.
node_ready() {
  wait_until 120 "node $NODE_NAME" kubectl wait node "$NODE_NAME" --for condition=Ready --timeout 2s
  wait_until 60 "the node's not-ready taint to go" node_untainted
  wait_until 60 "the default service account" kubectl get serviceaccount default
}

# Kills the node's containers: their shims and processes outlive kubelet and containerd.
node_stop_containers() {
  local runc_root="$dir/node/runc/k8s.io" id
  if [[ -d $runc_root ]]; then
    for id in $(runc --root "$runc_root" list -q 2>/dev/null); do
      runc --root "$runc_root" kill -a "$id" KILL 2>/dev/null || true
    done
  fi
  pkill -KILL -f -- "containerd-shim.*-address $dir/" 2>/dev/null || true
}

# Removes what is left once every process is gone: the mounts under $dir (pod volumes,
# sandboxes' namespaces and shm), then the network namespace with its links and rules.
node_remove() {
  local target
  findmnt -rn -o TARGET | { grep -F -- "$dir/" || true; } | sort -r | while read -r target; do
    umount -l "$target" 2>/dev/null || true
  done
  ip netns delete "$(cat "$dir/netns")" 2>/dev/null || true
}
