#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler),
# the node's kubelet and kubectl from the Go module proxy, because no release binaries can be
# downloaded here.
#
# Binaries are cached outside the clone, keyed by the pinned versions, so a second run
# takes seconds and CI and later sessions reuse them. The last line printed is the bin dir.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

# shellcheck source=../lib.sh
. "$here/../lib.sh"
dir="$cache_root/controlplane/$K8S_VERSION-$ETCD_VERSION"
bin="$dir/bin"

log() { echo "controlplane: $*" >&2; }

# A cached binary counts only when it reports the pinned version.
reports() { [ -x "$1" ] && "$1" --version 2>/dev/null | grep -F -- "$2" >/dev/null; }

k8s_commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)

k8s_reports() {
  if [ "$1" = kubectl ]; then
    "$bin/kubectl" version --client 2>/dev/null | grep -F "$K8S_VERSION" >/dev/null
  else
    reports "$bin/$1" "Kubernetes $K8S_VERSION"
  fi
}

# The Kubernetes commands not yet built (a cache from before the node was added lacks two).
k8s_missing() {
  local b
  for b in "${k8s_commands[@]}"; do k8s_reports "$b" || echo "$b"; done
}

build_kubernetes() {
  local src="$dir/src/kubernetes" gomod staging_minor_patch cmd
  local -a commands=("$@")
  mkdir -p "$src" "$bin"
  log "building Kubernetes $K8S_VERSION (${commands[*]})"
  gomod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }

  # Staging modules are published as v0.<minor>.<patch> for release v1.<minor>.<patch>.
  staging_minor_patch=${K8S_VERSION#v1.}
  {
    echo "module tokenwarden.dev/hack/controlplane/kubernetes"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "// Derived from k8s.io/kubernetes@$K8S_VERSION's own go.mod: each '=> ./staging/src/...'"
    echo "// line becomes the published module at v0.$staging_minor_patch."
    echo "replace ("
    sed -n -E 's#^[[:space:]]*(k8s\.io/[^[:space:]]+)[[:space:]]+=>[[:space:]]+\./staging/src/.*$#\t\1 => \1 v0.'"$staging_minor_patch"'#p' "$gomod"
    echo ")"
  } >"$src/go.mod"
  grep -q '=> k8s.io/api ' "$src/go.mod" || { log "no staging replace lines derived from $gomod"; exit 1; }

  (
    cd "$src"
    local -a packages=("${commands[@]/#/k8s.io/kubernetes/cmd/}")
    go get "${packages[@]/%/@$K8S_VERSION}" >&2
    local major minor ldflags pkg
    major=${K8S_VERSION#v}; major=${major%%.*}
    minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
    ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags="$ldflags -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
      ldflags="$ldflags -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    go build -trimpath -ldflags "$ldflags" -o "$bin/" "${packages[@]}"
  )
}

build_etcd() {
  local src="$dir/src/etcd"
  mkdir -p "$src" "$bin"
  log "building etcd $ETCD_VERSION"
  # A wrapper module: etcd's server module has relative replace lines, so `go install` refuses it.
  cat >"$src/go.mod" <<EOF
module tokenwarden.dev/hack/controlplane/etcd

go 1.26.0
EOF
  cat >"$src/main.go" <<'EOF'
// Command etcd is the etcd server, built from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (
    cd "$src"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    go mod tidy >&2
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .
  )
}

started=$(date +%s)
scratch_gocache
mapfile -t missing < <(k8s_missing)
[ ${#missing[@]} -eq 0 ] || build_kubernetes "${missing[@]}"
reports "$bin/etcd" "etcd Version: ${ETCD_VERSION#v}" || build_etcd

[ -z "$(k8s_missing)" ] || { log "kube binaries in $bin do not report $K8S_VERSION: $(k8s_missing | xargs)"; exit 1; }
reports "$bin/etcd" "etcd Version: ${ETCD_VERSION#v}" || { log "etcd in $bin does not report $ETCD_VERSION"; exit 1; }
log "ready in $(($(date +%s) - started)) s"
echo "$bin"
