#!/usr/bin/env bash
# `make image`: the operator's image, built offline with buildah from the Dockerfile, a
# release build compiled here and a local runtime base (hack/lib/images.sh). With
# --debug, the debug build the tests already have instead. Loads the image into the
# node of every running environment that has one. Prints the image's OCI archive.
#
# usage: hack/image.sh [--debug]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source hack/lib/common.sh
source hack/lib/node.sh
source hack/lib/images.sh

profile=release
[[ ${1:-} == --debug ]] && profile=debug
node_packages
if [[ $profile == release ]]; then
  cargo build --release --locked --bin summit-config
else
  cargo build --locked --bin summit-config
fi
archive="$(operator_image "target/$profile/summit-config")"
log "built $OPERATOR_IMAGE ($profile) into $archive"
for socket in "$SUMMIT_ENV_ROOT"/*/node/containerd.sock; do
  [[ -S $socket ]] || continue
  ctr --address "$socket" -n k8s.io images import "$archive" >/dev/null
  log "loaded it into the node of $(basename "$(dirname "$(dirname "$socket")")")"
done
echo "$archive"
