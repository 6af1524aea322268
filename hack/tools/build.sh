#!/usr/bin/env bash
# Builds helm, kubeconform and promtool from the Go module proxy (no release binaries can be downloaded
# here), pinned in versions.env. Each tool is cached outside the clone in
# ~/.cache/tokenwarden/tools/<name>-<version>/bin (root overridable with TOKENWARDEN_CACHE);
# a cached binary counts only when it reports the pinned version. The last line printed is a
# bin directory holding every tool (symlinks into the per-tool cache directories).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

# shellcheck source=../lib.sh
. "$here/../lib.sh"
tools="$cache_root/tools"
all="$tools/bin-helm-$HELM_VERSION-kubeconform-$KUBECONFORM_VERSION-promtool-$PROMETHEUS_VERSION"

log() { echo "tools: $*" >&2; }

# build NAME VERSION PACKAGE@VERSION LDFLAGS VERSION-COMMAND...
build() {
  local name=$1 version=$2 pkg=$3 ldflags=$4
  shift 4
  local bin="$tools/$name-$version/bin"
  if [ -x "$bin/$name" ] && "$bin/$name" "$@" 2>/dev/null | grep -F -- "${version#v}" >/dev/null; then
    echo "$bin"
    return
  fi
  log "building $name $version"
  mkdir -p "$bin"
  GOBIN="$bin" go install -trimpath -ldflags "$ldflags" "$pkg" >&2
  "$bin/$name" "$@" 2>/dev/null | grep -F -- "${version#v}" >/dev/null ||
    { log "$bin/$name does not report $version"; exit 1; }
  echo "$bin"
}

started=$(date +%s)
scratch_gocache
helm_bin=$(build helm "$HELM_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" \
  "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
  version --template '{{.Version}}')
kubeconform_bin=$(build kubeconform "$KUBECONFORM_VERSION" \
  "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" \
  "-s -w -X main.version=$KUBECONFORM_VERSION" -v)
promtool_bin=$(build promtool "$PROMETHEUS_VERSION" \
  "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION" \
  "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" --version)

mkdir -p "$all"
ln -sfn "$helm_bin/helm" "$all/helm"
ln -sfn "$kubeconform_bin/kubeconform" "$all/kubeconform"
ln -sfn "$promtool_bin/promtool" "$all/promtool"
log "ready in $(($(date +%s) - started)) s"
echo "$all"
