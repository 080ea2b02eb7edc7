# The two commands a newcomer runs: `make demo` and `make test`.
SHELL := /usr/bin/env bash

.PHONY: test demo demo-down env-up env-down tools image crds lint unit bench bench-converge bench-latency bench-secrets bench-drift bench-restart

## make test: build the tools (cached), bring up the environment, lint and run every test, bring it down.
test:
	hack/test.sh

## make demo: a local control plane with a node, the chart installed onto it with helm, examples/ applied; stays up.
demo:
	hack/demo.sh

## make demo-down: stop everything `make demo` started.
demo-down:
	hack/env-down.sh demo

## make tools: build kube-apiserver, kubectl, etcd, consul and helm once into the cache.
tools:
	hack/tools/build.sh >/dev/null

## make image: the operator's image (release build), built offline with buildah and loaded into running nodes.
image:
	hack/image.sh >/dev/null

env-up:
	hack/env-up.sh test

env-down:
	hack/env-down.sh test

## make crds: regenerate the chart's CRDs (crds/ links to them) from the Rust types.
crds:
	cargo run --quiet -- crds --out-dir charts/summit-config/files/crds

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

## make unit: the tests that need no environment.
unit:
	cargo test --lib --bins

## make bench [ENTRIES=N]: the suite (converge, latency, restart, secrets) over N entries (1,000 by default), in one environment.
bench:
	hack/bench.sh suite $(or $(ENTRIES),1000)

## make bench-converge [ENTRIES=N]: converge N entries from cold, beside the write ceiling measured in the same run.
bench-converge:
	hack/bench.sh converge $(or $(ENTRIES),1000)

## make bench-latency [ENTRIES=N]: approval -> ConfigMap percentiles under a churn of 10 changes/s.
bench-latency:
	hack/bench.sh latency $(or $(ENTRIES),1000)

## make bench-secrets [ENTRIES=N]: N AWS secret references -> Secrets from cold, and provider reads counted.
bench-secrets:
	hack/bench.sh secrets $(or $(ENTRIES),1000)

## make bench-drift [ENTRIES=N]: one DriftCheck over N entries (2,000 by default): pass time and requests per backend.
bench-drift:
	hack/bench.sh drift $(or $(ENTRIES),2000)

## make bench-restart [ENTRIES=N]: restart the operator over N converged entries (1,000 by default): time to checked, requests sent.
bench-restart:
	hack/bench.sh restart $(or $(ENTRIES),1000)
