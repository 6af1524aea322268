# tokenwarden: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: all build controlplane demo test lint unit integration crds clean-cache

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
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ARTIFACTS := target/tmp/artifacts

# Unit tests, then integration tests against a real control plane (one per test binary),
# then the leak scan over everything they produced (logs, events, statuses, metrics, output).
test: lint
	@rm -rf $(ARTIFACTS) && mkdir -p $(ARTIFACTS)
	@bin=$$(bash hack/controlplane/build.sh | tail -n 1); \
	status=0; \
	TOKENWARDEN_CONTROLPLANE_BIN="$$bin" $(CARGO) test --workspace --no-fail-fast 2>&1 \
	  | tee $(ARTIFACTS)/cargo-test.log || status=$$?; \
	$(CARGO) run --quiet -p tokenwarden-testenv --bin leak-scan $(ARTIFACTS) || status=1; \
	exit $$status
