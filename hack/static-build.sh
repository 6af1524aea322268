#!/usr/bin/env bash
# Builds the static tokenwarden binary the Dockerfile ships (glibc, +crt-static), then checks
# it is static and runs. Prints the binary's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# A static PIE (ASLR kept) whose relative relocations are packed (DT_RELR: a linker that knows
# -z pack-relative-relocs, GNU ld >= 2.38 or lld >= 15, and glibc >= 2.36 to apply them):
# 25 KB instead of 1.5 MB of .rela.dyn, which the loader reads whole at start and which then
# stayed resident (BENCHMARKS.md, "Memory at 10k"). The checks below fail if either is missing.
RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs" \
  cargo build --release --locked --target "$target" --bin tokenwarden >&2
bin="target/$target/release/tokenwarden"
if ! readelf -d "$bin" | grep -q '(RELR)'; then
  echo "static-build: $bin has no packed relocations (DT_RELR): the linker ignored -z pack-relative-relocs" >&2
  exit 1
fi
# No NEEDED entries: nothing to load from the image at run time.
if readelf -d "$bin" | grep -q '(NEEDED)'; then
  echo "static-build: $bin is dynamically linked:" >&2
  readelf -d "$bin" | grep '(NEEDED)' >&2
  exit 1
fi
"$bin" --version >&2
"$bin" crd | grep -q 'name: workspacetokens.tokenwarden.dev' || { echo "static-build: $bin crd failed" >&2; exit 1; }
# It runs with nothing from the host: an empty environment and no home, like distroless.
env -i "$PWD/$bin" --help >/dev/null
echo "static-build: $bin is static ($(du -h "$bin" | cut -f1)) and runs" >&2
echo "$bin"
