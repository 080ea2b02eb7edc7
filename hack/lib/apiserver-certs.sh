#!/usr/bin/env bash
# Writes the PKI and static-token users of a test apiserver into $1:
# a CA, serving certificates for the apiserver and Consul (127.0.0.1/localhost and the
# further IP addresses given), the apiserver's client certificate for kubelets, the
# service-account key pair, and tokens.csv with an admin in system:masters, the users
# tests act as, and the node's components.
#
# usage: apiserver-certs.sh DIR [IP...]
set -euo pipefail
dir="$1"
shift
extra=""
for ip in "$@"; do extra+=",IP:$ip"; done
mkdir -p "$dir/pki"
cd "$dir/pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=summit-test-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout apiserver.key -out apiserver.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc%s\n' "$extra" >san.ext
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile san.ext -out apiserver.crt 2>/dev/null
# Consul's HTTPS certificate, from the same CA.
openssl req -newkey rsa:2048 -nodes -subj "/CN=server.dc1.consul" \
  -keyout consul.key -out consul.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:server.dc1.consul%s\n' "$extra" >consul-san.ext
openssl x509 -req -in consul.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -extfile consul-san.ext -out consul.crt 2>/dev/null
# How the apiserver proves itself to kubelets (logs, exec).
openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
  -keyout kubelet-client.key -out kubelet-client.csr 2>/dev/null
openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
  -out kubelet-client.crt 2>/dev/null
openssl genrsa -out sa.key 2048 2>/dev/null
openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null

token() { openssl rand -hex 16; }
{
  echo "$(token),admin,admin,\"system:masters\""
  # Requester, approvers and an outsider: tests grant them RBAC as each test needs.
  echo "$(token),alice,alice,\"summit:developers\""
  echo "$(token),bob,bob,\"summit:approvers\""
  echo "$(token),carol,carol,\"summit:approvers\""
  echo "$(token),mallory,mallory"
  # The node's components, as Kubernetes' default RBAC and the Node authorizer know them.
  echo "$(token),system:node:summit-node,kubelet,\"system:nodes\""
  echo "$(token),system:kube-controller-manager,kube-controller-manager"
  echo "$(token),system:kube-scheduler,kube-scheduler"
  echo "$(token),system:kube-proxy,kube-proxy"
} >"$dir/tokens.csv"
chmod 600 "$dir/tokens.csv"
