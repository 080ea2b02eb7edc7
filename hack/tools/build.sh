#!/usr/bin/env bash
# Builds the test tooling (Kubernetes, etcd, consul, helm, Prometheus and promtool) from the Go
# module proxy with this machine's Go, and flagd-eval (the OpenFeature flagd
# provider, a Rust crate) with this machine's cargo, once. Each wrapper module under hack/tools/
# is cached in its own directory named after a hash of its go.mod, go.sum and the
# Go version, outside the repository, so a warm run rebuilds nothing and a bumped
# pin rebuilds only that tool.
#
# Prints the directory holding all the binaries (symlinks) on stdout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SUMMIT_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/summit-config/tools}"
go_version="$(go env GOVERSION)"
bin="$cache/bin"
mkdir -p "$bin"

# Linker flags per tool. Kubernetes binaries learn their own version only from -X
# flags; without them they call themselves v0.0.0-master, which kubectl and helm
# cannot parse.
ldflags_for() {
  local name="$1" dir="$here/$1"
  local flags=""
  if [[ $name == kubernetes ]]; then
    local version minor
    version="$(cd "$dir" && go list -m -f '{{.Version}}' k8s.io/kubernetes)"
    minor="$(cut -d. -f2 <<<"$version")"
    local pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
  fi
  printf "%s" "${flags# }"
}

build_tool() {
  local name="$1" dir="$here/$1" key out ldflags
  ldflags="$(ldflags_for "$name")"
  key="$(cat "$dir/go.mod" "$dir/go.sum" <(echo "$go_version") <(echo -n "$ldflags") | sha256sum | cut -c1-16)"
  out="$cache/$name-$key"
  if [[ ! -f "$out/.complete" ]]; then
    echo "building $name ($key) with $go_version; this happens once per pin" >&2
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp"
    local started=$SECONDS
    (cd "$dir" && GOFLAGS=-mod=readonly CGO_ENABLED=0 \
      go build -trimpath -ldflags="-s -w $ldflags" -o "$out.tmp/" tool)
    touch "$out.tmp/.complete"
    rm -rf "$out"
    mv "$out.tmp" "$out"
    echo "built $name in $((SECONDS - started))s" >&2
  fi
  local f link
  for f in "$out"/*; do
    link="$(basename "$f")"
    # etcd's main package is go.etcd.io/etcd/server/v3, so Go names the binary "server".
    [[ $name == etcd && $link == server ]] && link=etcd
    ln -sfn "$f" "$bin/$link"
  done
}

# protoc, which the flagd provider's build needs, from Debian's packages when missing
# (as .ci/run installs PostgreSQL).
need_protoc() {
  command -v protoc >/dev/null && return
  [[ $(id -u) -eq 0 ]] || { echo "building flagd-eval needs protoc: apt-get install protobuf-compiler (as root)" >&2; exit 1; }
  echo "installing protobuf-compiler from Debian's packages" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
  }
}

# A Rust tool under hack/tools/NAME (its own locked crate, outside the workspace),
# cached like the Go ones under a hash of its sources and the Rust version.
build_rust_tool() {
  local name="$1" dir="$here/$1" key out
  key="$(cat "$dir/Cargo.toml" "$dir/Cargo.lock" "$dir"/src/*.rs <(rustc --version) | sha256sum | cut -c1-16)"
  out="$cache/$name-$key"
  if [[ ! -f "$out/.complete" ]]; then
    need_protoc
    echo "building $name ($key); this happens once per pin" >&2
    local started=$SECONDS
    CARGO_TARGET_DIR="$cache/cargo-target" cargo build --quiet --locked --manifest-path "$dir/Cargo.toml"
    rm -rf "$out.tmp"
    mkdir -p "$out.tmp"
    cp "$cache/cargo-target/debug/$name" "$out.tmp/"
    touch "$out.tmp/.complete"
    rm -rf "$out"
    mv "$out.tmp" "$out"
    echo "built $name in $((SECONDS - started))s" >&2
  fi
  ln -sfn "$out/$name" "$bin/$name"
}

for tool in etcd consul helm kubernetes prometheus; do
  build_tool "$tool"
done
build_rust_tool flagd-eval
echo "$bin"
