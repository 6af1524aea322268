# Shared by the scripts that build Go tools from the Go module proxy (sourced, not run).
# Sets cache_root (outside the clone, overridable with TOKENWARDEN_CACHE), pins the Go
# environment, and gives each build a scratch Go build cache.

cache_root=${TOKENWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenwarden}

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# The built binaries are what is cached, so the Go build cache serves one run only. It lives in
# a scratch directory removed on exit: left in ~/.cache/go-build it keeps ~3 GB on a fresh
# machine's disk, next to a cargo target/ that needs the room.
scratch_gocache() {
  GOCACHE=$(mktemp -d "${TMPDIR:-/tmp}/tokenwarden-gocache.XXXXXX")
  export GOCACHE
  trap 'rm -rf "$GOCACHE"' EXIT
}
