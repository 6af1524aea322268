#!/usr/bin/env bash
# Builds the previous release's tokenwarden (PREVIOUS_COMMIT in versions.env) from this
# repository's own history: the commit's tree is exported with `git archive` and built in a
# scratch directory whose target/ is removed afterwards. The binary and the commit's crds/ are
# cached outside the clone in ~/.cache/tokenwarden/previous/<commit>/ (root overridable with
# TOKENWARDEN_CACHE). Prints that directory last.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
# shellcheck source=../lib.sh
. "$here/../lib.sh"

log() { echo "previous: $*" >&2; }

commit=$(git -C "$repo" rev-parse --verify --quiet "$PREVIOUS_COMMIT^{commit}") || {
  # A shallow clone lacks it: fetch that one commit from where the clone came from.
  log "fetching $PREVIOUS_COMMIT (not in this clone's history)"
  git -C "$repo" fetch --quiet --depth 1 origin "$PREVIOUS_COMMIT" >&2 || true
  commit=$(git -C "$repo" rev-parse --verify --quiet "$PREVIOUS_COMMIT^{commit}") || {
    log "commit $PREVIOUS_COMMIT is not in this clone's history and could not be fetched: git fetch --unshallow"
    exit 1
  }
}
out="$cache_root/previous/$commit"
if [ -x "$out/tokenwarden" ] && [ -f "$out/crds/workspacetokens.tokenwarden.dev.yaml" ]; then
  echo "$out"
  exit 0
fi
started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/tokenwarden-previous.XXXXXX")
trap 'rm -rf "$work"' EXIT
log "building tokenwarden at $commit"
git -C "$repo" archive "$commit" | tar -x -C "$work"
CARGO_TARGET_DIR="$work/target" cargo build --locked --quiet --manifest-path "$work/Cargo.toml" --bin tokenwarden >&2
# Assembled beside the cache entry and moved into place whole: a concurrent run sees either
# nothing or a complete directory.
mkdir -p "$(dirname "$out")"
staged=$(mktemp -d "$out.XXXXXX")
cp "$work/target/debug/tokenwarden" "$staged/tokenwarden"
cp -r "$work/crds" "$staged/crds"
rm -rf "$out" && mv "$staged" "$out"
log "ready in $(($(date +%s) - started)) s"
echo "$out"
