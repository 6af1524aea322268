#!/usr/bin/env bash
# `make demo`: a local control plane with a node, the CRDs, the operator, the short-interval
# demo manifest, pods that read the rotated Secret, and the reference platform behind a
# TokenIssuer; shows tokens being minted and rotated, and the pods following them, until
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
  # Children first (the status loop's sleep, a pipeline's kubectl), then what was started.
  for pid in "${pids[@]}"; do pkill -TERM -P "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopped; nothing left running"
}
# A signal ends the script (and EXIT stops everything): it never carries on starting things.
trap stop EXIT
trap 'exit 130' INT TERM

# The node (containerd, kubelet, a local busybox image) needs root and Debian's containerd,
# runc, busybox-static and containernetworking-plugins: the README says so.
target/debug/controlplane --node --kubeconfig "$kubeconfig" &
pids+=($!)
for _ in $(seq 1 1800); do
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
# Pods on the node: token-reader mounts agent-alpha's Secret, env-reader reads it from env
# and is agent-alpha's restartTarget.
"${kubectl[@]}" apply -n tokenwarden-demo -f examples/demo-pods.yaml
"${kubectl[@]}" rollout status -n tokenwarden-demo --timeout=120s deployment/token-reader
"${kubectl[@]}" rollout status -n tokenwarden-demo --timeout=120s deployment/env-reader

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

echo "demo: watching WorkspaceTokens, their Secrets and the pods reading them (Ctrl-C to stop)"
"${kubectl[@]}" get wst -A -w &
pids+=($!)
# What the pod mounting agent-alpha sees, as the kubelet updates its volume after each cutover.
"${kubectl[@]}" logs -n tokenwarden-demo -f deployment/token-reader > >(sed -u 's/^/pod token-reader | /') 2>&1 &
pids+=($!)
(
  while sleep 15; do
    echo "--- $(date -u +%H:%M:%S) env-reader: restarted at each cutover, each pod holds the token it started with"
    "${kubectl[@]}" get pods -n tokenwarden-demo -l app=env-reader 2>&1 || true
    "${kubectl[@]}" logs -n tokenwarden-demo -l app=env-reader --tail=1 --prefix 2>&1 || true
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
