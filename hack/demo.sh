#!/usr/bin/env bash
# `make demo`: a local control plane, the CRDs, the operator, the short-interval demo manifest
# and the reference platform behind a TokenIssuer; shows tokens being minted and rotated until
# Ctrl-C (or DEMO_SECONDS), then stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(bash hack/controlplane/build.sh | tail -n 1)
cargo build --workspace --quiet
demo_dir=target/demo
mkdir -p "$demo_dir"
kubeconfig="$PWD/$demo_dir/kubeconfig"
rm -f "$kubeconfig"
export KUBECONFIG="$kubeconfig"
kubectl=("$bin/kubectl")

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "demo: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopped; nothing left running"
}
trap stop INT TERM EXIT

target/debug/controlplane --kubeconfig "$kubeconfig" &
pids+=($!)
for _ in $(seq 1 600); do
  [ -f "$kubeconfig" ] && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "demo: the control plane failed to start" >&2; exit 1; }
  sleep 0.1
done
[ -f "$kubeconfig" ] || { echo "demo: the control plane did not become ready" >&2; exit 1; }

"${kubectl[@]}" apply -f crds/
"${kubectl[@]}" wait --for=condition=Established --timeout=30s crd/workspacetokens.tokenwarden.dev \
  crd/tokenissuers.tokenwarden.dev crd/clustertokenissuers.tokenwarden.dev

# The reference platform for the HTTP issuer (tokens verified and revoked over HTTP).
platform_port=${DEMO_PLATFORM_PORT:-18090}
rm -f "$demo_dir/platform.json" "$demo_dir/admin.token"
target/debug/platform --listen "127.0.0.1:$platform_port" --data "$demo_dir/platform.json" \
  --admin-token-file "$demo_dir/admin.token" >"$demo_dir/platform.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do [ -s "$demo_dir/admin.token" ] && break; sleep 0.1; done

target/debug/tokenwarden run --metrics-addr 127.0.0.1:0 --log-format text >"$demo_dir/operator.log" 2>&1 &
pids+=($!)
echo "demo: operator running (audit lines and logs: $demo_dir/operator.log)"
"${kubectl[@]}" create namespace tokenwarden-demo
"${kubectl[@]}" apply -n tokenwarden-demo -f examples/demo.yaml

curl -fsS -X POST "http://127.0.0.1:$platform_port/workspaces" \
  -H "Authorization: Bearer $(cat "$demo_dir/admin.token")" -H 'Content-Type: application/json' \
  -d '{"id":"5f0c1e7a-93d4-4c52-9a1e-2b7d3f6a8c10"}' >/dev/null
"${kubectl[@]}" create secret generic platform-admin -n tokenwarden-demo \
  --from-file=token="$demo_dir/admin.token" >/dev/null
# The TokenIssuer `platform` (the URL and the admin Secret) and the WorkspaceToken naming it.
sed "s#http://127.0.0.1:18090#http://127.0.0.1:$platform_port#" examples/demo-http.yaml |
  "${kubectl[@]}" apply -n tokenwarden-demo -f -
echo "demo: platform on http://127.0.0.1:$platform_port (log: $demo_dir/platform.log)"
# The operator marks the issuer Ready once its admin Secret resolves; agent-beta mints there.
"${kubectl[@]}" wait -n tokenwarden-demo --for=condition=Ready --timeout=60s tokenissuer/platform
"${kubectl[@]}" get tokenissuers -n tokenwarden-demo

echo "demo: watching WorkspaceTokens and their Secrets (Ctrl-C to stop)"
"${kubectl[@]}" get wst -A -w &
pids+=($!)
(
  while sleep 15; do
    echo "--- $(date -u +%H:%M:%S) tokenwarden status -n tokenwarden-demo"
    target/debug/tokenwarden status -n tokenwarden-demo 2>&1 || true
    target/debug/tokenwarden status -n tokenwarden-demo agent-beta 2>&1 || true
    "${kubectl[@]}" get secrets -n tokenwarden-demo -l app.kubernetes.io/managed-by=tokenwarden \
      -L tokenwarden.dev/version 2>/dev/null || true
  done
) &
pids+=($!)

if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  while sleep 3600; do :; done
fi
