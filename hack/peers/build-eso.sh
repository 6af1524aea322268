#!/usr/bin/env bash
# Builds External Secrets Operator's controller from the Go module proxy (no release binaries
# or images can be downloaded here), pinned in versions.env, for `make bench-peers`.
#
# Cached outside the clone in ~/.cache/tokenwarden/peers/eso-<version>/ (root overridable with
# TOKENWARDEN_CACHE): bin/external-secrets and crds/bundle.yaml (ESO's CRD bundle, copied from
# the module). ESO's binary has no version flag, so a cached build counts when the binary is
# executable and bin/.version names the pinned version. The last line printed is that directory.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

# shellcheck source=../lib.sh
. "$here/../lib.sh"
dir="$cache_root/peers/eso-$ESO_VERSION"
bin="$dir/bin"
module=github.com/external-secrets/external-secrets

log() { echo "eso: $*" >&2; }

cached() {
  [ -x "$bin/external-secrets" ] && [ -s "$dir/crds/bundle.yaml" ] &&
    [ "$(cat "$bin/.version" 2>/dev/null)" = "$ESO_VERSION" ]
}

build() {
  local src="$dir/src" moddir gomod
  rm -rf "$src" "$bin/.version"
  mkdir -p "$src" "$bin" "$dir/crds"
  log "building External Secrets Operator $ESO_VERSION"
  moddir=$(cd "$src" && go mod download -json "$module@$ESO_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  gomod="$moddir/go.mod"
  [ -f "$gomod" ] || { log "could not download $module@$ESO_VERSION"; exit 1; }

  # A wrapper module, because a dependency's replace lines do not apply: ESO's own (a sprig
  # fork) are copied from its go.mod, with its go directive.
  {
    echo "module tokenwarden.dev/hack/peers/eso"
    echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require $module $ESO_VERSION"
    echo
    echo "// Copied from $module@$ESO_VERSION's own go.mod."
    grep -E '^replace [^(]' "$gomod" || true
    sed -n '/^replace ($/,/^)$/p' "$gomod"
  } >"$src/go.mod"
  grep -q '^replace github.com/Masterminds/sprig/v3 ' "$src/go.mod" ||
    { log "no sprig replace line copied from $gomod"; exit 1; }
  cat >"$src/main.go" <<'GO'
// Command external-secrets is External Secrets Operator's controller (its root command; the
// webhook and certcontroller subcommands are there too), built from the Go module proxy.
package main

import "github.com/external-secrets/external-secrets/cmd/controller"

func main() { controller.Execute() }
GO
  (
    cd "$src"
    go mod tidy >&2
    go build -trimpath -ldflags "-s -w" -o "$bin/external-secrets" .
  )
  cp "$moddir/deploy/crds/bundle.yaml" "$dir/crds/bundle.yaml"
  chmod 0644 "$dir/crds/bundle.yaml"
  # The wrapper's go.mod and go.sum are all the source kept: the module cache holds the rest.
  rm -f "$src/main.go"
  echo "$ESO_VERSION" >"$bin/.version"
}

started=$(date +%s)
if ! cached; then
  scratch_gocache
  build
  cached || { log "$dir is incomplete after the build"; exit 1; }
fi
log "ready in $(($(date +%s) - started)) s"
echo "$dir"
