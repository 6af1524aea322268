#!/usr/bin/env bash
# `make chart-check`: the Helm chart, checked the way CI checks it.
#   1. charts/tokenwarden/files/crds/ is byte for byte the generated crds/ (no drift, no
#      CRD missing from either);
#   2. helm lint --strict and helm template for each values set below;
#   3. kubeconform -strict on every rendered manifest, against JSON schemas generated from the
#      pinned kube-apiserver's own OpenAPI (hack/kube-schemas.py; cached per Kubernetes version
#      and CRDs), because kubeconform's schemas cannot be downloaded here;
#   4. the kube-linter checks (.kube-linter.yaml; see hack/kube-lint.py for why a stand-in).
# Rendered manifests are left in target/chart-check/ for reading.
set -euo pipefail
cd "$(dirname "$0")/.."

chart=charts/tokenwarden
crds=(workspacetokens.tokenwarden.dev tokenissuers.tokenwarden.dev clustertokenissuers.tokenwarden.dev)
out=target/chart-check
log() { echo "chart-check: $*" >&2; }

tools=$(bash hack/tools/build.sh | tail -n 1)
helm=("$tools/helm")
kubeconform="$tools/kubeconform"

# 1. The chart's CRD copies are the generated ones, and the chart has every CRD and no other.
for crd in "${crds[@]}"; do
  if ! cmp -s "crds/$crd.yaml" "$chart/files/crds/$crd.yaml"; then
    log "$chart/files/crds/$crd.yaml differs from crds/$crd.yaml; run: cp crds/*.yaml $chart/files/crds/"
    exit 1
  fi
done
for dir in crds "$chart/files/crds"; do
  found=$(cd "$dir" && ls -- *.yaml | sort | tr '\n' ' ')
  want=$(printf '%s.yaml\n' "${crds[@]}" | sort | tr '\n' ' ')
  if [ "$found" != "$want" ]; then
    log "$dir holds $found; expected $want (update crds=(...) here and templates/crd.yaml)"
    exit 1
  fi
done

# 2. Lint and render: default (cluster-wide), namespaced, HA, and everything optional on.
declare -A sets=(
  [default]=""
  [namespaced]="--set watchNamespace=team-a"
  [ha]="--set replicaCount=2"
  [full]="--set replicaCount=3 --set serviceMonitor.enabled=true --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true --set leaderElection.enabled=true --set watchNamespace=team-a --set clusterResourceNamespace=platform --set image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000"
  [nocrd]="--set crds.install=false --set crds.keep=false --set rbac.create=true --set service.enabled=false"
)
rm -rf "$out" && mkdir -p "$out"
k8s_version=$(. hack/controlplane/versions.env && echo "${K8S_VERSION#v}")
for name in "${!sets[@]}"; do
  # shellcheck disable=SC2086 # word splitting of the --set flags is intended
  "${helm[@]}" lint --strict "$chart" --namespace tokenwarden-system ${sets[$name]} >"$out/$name.lint.log" 2>&1 ||
    { cat "$out/$name.lint.log" >&2; log "helm lint --strict failed ($name)"; exit 1; }
  # shellcheck disable=SC2086
  "${helm[@]}" template tokenwarden "$chart" --namespace tokenwarden-system \
    --kube-version "$k8s_version" ${sets[$name]} >"$out/$name.yaml"
  log "helm lint --strict and helm template ok ($name: $(grep -c '^kind:' "$out/$name.yaml") objects)"
done
rendered=$(grep -c '^kind: CustomResourceDefinition$' "$out/default.yaml" || true)
if [ "$rendered" != "${#crds[@]}" ]; then
  log "the chart renders $rendered CRDs, not ${#crds[@]}: templates/crd.yaml must name each of crds/"
  exit 1
fi

# 3. kubeconform -strict against the real API server's schemas.
crd_sum=$(for crd in "${crds[@]}"; do cat "crds/$crd.yaml"; done | sha256sum | cut -c1-12)
cache_root=${TOKENWARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tokenwarden}
schemas="$cache_root/tools/kube-schemas/v$k8s_version-crd-$crd_sum"
if [ ! -f "$schemas/done" ]; then
  log "generating JSON schemas from kube-apiserver v$k8s_version's OpenAPI"
  cp_bin=$(bash hack/controlplane/build.sh | tail -n 1)
  cargo build --quiet -p tokenwarden-testenv --bin controlplane
  target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
  work=$(mktemp -d)
  TOKENWARDEN_CONTROLPLANE_BIN="$cp_bin" "$target_dir/debug/controlplane" --kubeconfig "$work/kubeconfig" >"$work/controlplane.log" 2>&1 &
  cp_pid=$!
  trap 'kill -TERM $cp_pid 2>/dev/null || true; wait $cp_pid 2>/dev/null || true; rm -rf "$work"' EXIT
  for _ in $(seq 1 600); do
    [ -f "$work/kubeconfig" ] && break
    kill -0 "$cp_pid" 2>/dev/null || { cat "$work/controlplane.log" >&2; log "control plane failed"; exit 1; }
    sleep 0.1
  done
  export KUBECONFIG="$work/kubeconfig"
  for crd in "${crds[@]}"; do
    "$cp_bin/kubectl" apply -f "crds/$crd.yaml" >&2
  done
  "$cp_bin/kubectl" wait --for=condition=Established --timeout=30s "${crds[@]/#/crd/}" >&2
  rm -rf "$schemas.tmp" && mkdir -p "$schemas.tmp"
  python3 hack/kube-schemas.py --kubectl "$cp_bin/kubectl" --out "$schemas.tmp"
  touch "$schemas.tmp/done"
  rm -rf "$schemas" && mv "$schemas.tmp" "$schemas"
  kill -TERM "$cp_pid"; wait "$cp_pid" 2>/dev/null || true
  trap - EXIT
  rm -rf "$work"
fi
location="$schemas/{{ .Group }}/{{ .ResourceAPIVersion }}/{{ .ResourceKind }}.json"
# ServiceMonitor and PrometheusRule are prometheus-operator's CRDs, not served by this API
# server: they are skipped (named explicitly, so anything else without a schema still fails;
# promtool checks the rules themselves: tests/alerts.rs).
"$kubeconform" -strict -summary -schema-location "$location" -skip ServiceMonitor,PrometheusRule \
  -kubernetes-version "$k8s_version" "$out"/*.yaml >&2 ||
  { log "kubeconform -strict failed"; exit 1; }

# 4. kube-linter's checks.
python3 hack/kube-lint.py --config .kube-linter.yaml "$out"/*.yaml ||
  { log "kube-linter checks failed"; exit 1; }
if command -v kube-linter >/dev/null; then
  kube-linter lint --config .kube-linter.yaml "$out"/*.yaml >&2
fi
log "ok"
