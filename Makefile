# tokenwarden: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: all build controlplane demo test lint unit integration crds clean-cache chart-check tools static-check bench bench-peers

all: build

build:
	$(CARGO) build --workspace

# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from the Go module proxy
# once (cached outside the clone); the last line printed is the bin directory.
controlplane:
	@bash hack/controlplane/build.sh

# The local control plane with the CRD, the operator and the demo manifest, until Ctrl-C.
demo:
	@bash hack/demo.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --features tokenwarden/failpoints -- -D warnings

# The Helm chart: CRD copies in sync, helm lint --strict, helm template (default, namespaced, HA),
# kubeconform -strict and the kube-linter checks on what it renders.
chart-check:
	@bash hack/chart-check.sh

# Builds helm and kubeconform from the Go module proxy once (cached outside the clone); the
# last line printed is the bin directory.
tools:
	@bash hack/tools/build.sh

ARTIFACTS := target/tmp/artifacts

# Unit tests, then integration tests against a real control plane (one per test binary),
# then the leak scan over everything they produced (logs, events, statuses, metrics, output).
test: lint chart-check gitops-check static-check
	@rm -rf $(ARTIFACTS) && mkdir -p $(ARTIFACTS)
	@bin=$$(bash hack/controlplane/build.sh | tail -n 1); \
	status=0; \
	TOKENWARDEN_CONTROLPLANE_BIN="$$bin" $(CARGO) test --workspace --features tokenwarden/failpoints --no-fail-fast 2>&1 \
	  | tee $(ARTIFACTS)/cargo-test.log || status=$$?; \
	$(CARGO) run --quiet -p tokenwarden-testenv --bin leak-scan $(ARTIFACTS) || status=1; \
	exit $$status

# The benchmark (BENCHMARKS.md): BENCH_N tokens (default 1000; 10000 works) against a fresh
# local control plane and the static release binary. A table, then one JSON line, also in
# target/bench/result.json. BENCH_IDLE_S, BENCH_CONCURRENCY and BENCH_STORM_EVERY_S tune it.
BENCH_N ?= 1000
bench:
	@bin=$$(bash hack/controlplane/build.sh | tail -n 1); \
	operator=$$(bash hack/static-build.sh | tail -n 1); \
	$(CARGO) build --release --locked -p tokenwarden-bench; \
	TOKENWARDEN_CONTROLPLANE_BIN="$$bin" BENCH_N=$(BENCH_N) ./target/release/bench --operator "$$operator"

# tokenwarden side by side with External Secrets Operator (hack/peers/versions.env, built from
# the Go module proxy once and cached outside the clone) on BENCH_N objects on one control
# plane: converge, idle, restart, one rotation. A table, then one JSON line, also in
# target/bench-peers/result.json; both operators' logs there too. BENCH_IDLE_S,
# BENCH_CONCURRENCY and BENCH_RESTART_WINDOW_S tune it.
bench-peers:
	@bin=$$(bash hack/controlplane/build.sh | tail -n 1); \
	operator=$$(bash hack/static-build.sh | tail -n 1); \
	eso=$$(bash hack/peers/build-eso.sh | tail -n 1); \
	$(CARGO) build --release --locked -p tokenwarden-bench; \
	TOKENWARDEN_CONTROLPLANE_BIN="$$bin" BENCH_N=$(BENCH_N) ./target/release/bench-peers --operator "$$operator" --eso "$$eso"

# The Argo CD health check (docs/argocd-health.lua) under the Lua engine Argo CD embeds.
.PHONY: gitops-check
gitops-check:
	cd hack/argocd && GOTOOLCHAIN=local GOWORK=off GOFLAGS=-mod=readonly go test -count=1 ./...

# Installs the binary as the kubectl plugin `kubectl tokenwarden` (PLUGIN_DIR must be on PATH).
PLUGIN_DIR ?= $(HOME)/.local/bin
.PHONY: install-plugin
install-plugin:
	$(CARGO) build --release --bin tokenwarden
	install -D -m 0755 target/release/tokenwarden $(PLUGIN_DIR)/kubectl-tokenwarden
	ln -sf kubectl-tokenwarden $(PLUGIN_DIR)/kubectl_complete-tokenwarden
	@echo "installed $(PLUGIN_DIR)/kubectl-tokenwarden (and kubectl_complete-tokenwarden, for kubectl's completion): try 'kubectl tokenwarden status -A'"

# The static binary the Dockerfile ships (no container engine here): built, checked static, run.
static-check:
	@bash hack/static-build.sh >/dev/null
