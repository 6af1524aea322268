#!/usr/bin/env bash
# `make demo`: a local control plane, the CRD, the operator and the short-interval demo
# manifest; shows tokens being minted and rotated until Ctrl-C (or DEMO_SECONDS), then stops
# everything it started.
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

if ls crds/*.yaml >/dev/null 2>&1; then
  "${kubectl[@]}" apply -f crds/
  "${kubectl[@]}" wait --for=condition=Established --timeout=30s crd/workspacetokens.tokenwarden.dev
fi

if target/debug/tokenwarden run --help >/dev/null 2>&1; then
  target/debug/tokenwarden run --metrics-addr 127.0.0.1:0 --log-format text >"$demo_dir/operator.log" 2>&1 &
  pids+=($!)
  echo "demo: operator running (log: $demo_dir/operator.log)"
  "${kubectl[@]}" create namespace tokenwarden-demo
  "${kubectl[@]}" apply -n tokenwarden-demo -f examples/demo.yaml
  echo "demo: watching WorkspaceTokens and their Secrets (Ctrl-C to stop)"
  "${kubectl[@]}" get wst -A -w &
  pids+=($!)
  (
    while sleep 10; do
      echo "--- $(date -u +%H:%M:%S) tokenwarden status -n tokenwarden-demo agent-alpha"
      target/debug/tokenwarden status -n tokenwarden-demo agent-alpha 2>&1 || true
      "${kubectl[@]}" get secrets -n tokenwarden-demo -l app.kubernetes.io/managed-by=tokenwarden \
        -L tokenwarden.dev/version 2>/dev/null || true
    done
  ) &
  pids+=($!)
else
  echo "demo: the operator is not built yet; the control plane is up with the CRD installed."
  echo "demo: KUBECONFIG=$kubeconfig $bin/kubectl get crds"
fi

if [ -n "${DEMO_SECONDS:-}" ]; then
  sleep "$DEMO_SECONDS"
else
  while sleep 3600; do :; done
fi
