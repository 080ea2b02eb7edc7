# Images built here, offline, with buildah from what Debian installed, and cached as
# OCI archives outside the repository. Source it; do not run it.

PAUSE_IMAGE=localhost/summit-config/pause:local
images_cache="${SUMMIT_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/summit-config/images}"

# buildah with its storage in the cache (vfs: there is no overlay inside this machine).
buildah_() {
  buildah --storage-driver vfs --root "$images_cache/storage" --runroot "$images_cache/run" "$@"
}

# The pods' sandbox ("pause") image: Debian's static busybox, asleep. Prints the path of
# its archive.
pause_image() {
  local key archive container
  key="$(sha256sum /bin/busybox | cut -c1-16)"
  archive="$images_cache/pause-$key.tar"
  if [[ ! -f $archive ]]; then
    mkdir -p "$images_cache"
    container="$(buildah_ from scratch)"
    buildah_ copy "$container" /bin/busybox /bin/busybox >/dev/null
    buildah_ config --entrypoint '["/bin/busybox", "sleep", "2147483647"]' \
      --user 65535:65535 "$container"
    buildah_ commit -q --rm "$container" "$PAUSE_IMAGE" >/dev/null
    rm -f "$archive.tmp"
    buildah_ push -q "$PAUSE_IMAGE" "oci-archive:$archive.tmp:$PAUSE_IMAGE"
    mv "$archive.tmp" "$archive"
  fi
  printf '%s' "$archive"
}

OPERATOR_IMAGE=localhost/summit-config/summit-config:dev

# A local stand-in for distroless's cc image: the shared libraries $1 links against and
# the CA certificates, both from this machine's Debian, and the nonroot user. Prints its
# name, tagged by what it holds.
runtime_base() {
  local binary="$1" libs key name container lib
  libs="$(ldd "$binary" | grep -o '/[^ ]*' | sort -u)"
  key="$(cat $libs /etc/ssl/certs/ca-certificates.crt | sha256sum | cut -c1-16)"
  name="localhost/summit-config/runtime-base:$key"
  if ! buildah_ inspect --type image "$name" >/dev/null 2>&1; then
    container="$(buildah_ from scratch)"
    for lib in $libs; do
      buildah_ copy "$container" "$(readlink -f "$lib")" "$lib" >/dev/null
    done
    buildah_ copy "$container" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ >/dev/null
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
      >"$images_cache/passwd"
    buildah_ copy "$container" "$images_cache/passwd" /etc/passwd >/dev/null
    buildah_ commit -q --rm "$container" "$name" >/dev/null
  fi
  printf '%s' "$name"
}

# The operator's image from the Dockerfile, with the binary $1 compiled here and a local
# runtime base: no registry involved. Prints the path of its OCI archive.
operator_image() {
  local binary="$1" repo="$here/.." base archive
  mkdir -p "$images_cache" "$repo/target/image"
  # Debug information is for the host; the image carries the code alone.
  objcopy --strip-debug "$binary" "$repo/target/image/summit-config"
  base="$(runtime_base "$binary")"
  buildah_ bud -q --build-arg RUNTIME_IMAGE="$base" --build-arg BINARY_FROM=prebuilt \
    -t "$OPERATOR_IMAGE" -f "$repo/Dockerfile" "$repo" >/dev/null
  archive="$images_cache/summit-config.tar"
  rm -f "$archive"
  buildah_ push -q "$OPERATOR_IMAGE" "oci-archive:$archive:$OPERATOR_IMAGE"
  printf '%s' "$archive"
}

# What the examples' workloads run, under the public name they use, so the same
# manifests work here offline and in a cluster that pulls it.
BUSYBOX_IMAGE=docker.io/library/busybox:1.36

# Debian's static busybox with its applets linked, as the public busybox image has them.
# Prints the path of its archive.
busybox_image() {
  local key archive rootfs container applet
  # The recipe is part of the key: a change to it builds the image again.
  key="$(cat /bin/busybox <(declare -f busybox_image) | sha256sum | cut -c1-16)"
  archive="$images_cache/busybox-$key.tar"
  if [[ ! -f $archive ]]; then
    mkdir -p "$images_cache"
    rootfs="$(mktemp -d)"
    mkdir -p "$rootfs/bin" "$rootfs/tmp"
    # As in the public image: anyone may write /tmp.
    chmod 1777 "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
      [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
    done
    container="$(buildah_ from scratch)"
    buildah_ copy "$container" "$rootfs" / >/dev/null
    buildah_ config --cmd '["sh"]' --env PATH=/bin "$container"
    buildah_ commit -q --rm "$container" "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$rootfs" "$archive.tmp"
    buildah_ push -q "$BUSYBOX_IMAGE" "oci-archive:$archive.tmp:$BUSYBOX_IMAGE"
    mv "$archive.tmp" "$archive"
  fi
  printf '%s' "$archive"
}
