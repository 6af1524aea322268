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
  log "commit $PREVIOUS_COMMIT is not in this clone's history (a shallow clone?): fetch it with git fetch --unshallow"
  exit 1
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
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cp "$work/target/debug/tokenwarden" "$out.tmp/tokenwarden"
cp -r "$work/crds" "$out.tmp/crds"
rm -rf "$out" && mv "$out.tmp" "$out"
log "ready in $(($(date +%s) - started)) s"
echo "$out"
