# dlserve — see README.md. Every target sets up the venv (libtorch) first if needed.
SHELL := /bin/bash
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)
CARGO ?= cargo
ADDR ?= 127.0.0.1:8080

.PHONY: setup build run test fresh-check openapi models fixtures bench bench-all bench-scale bench-formats bench-kinds bench-traces bench-lm bench-protocols bench-threads stress docker-smoke lint

setup:
	@scripts/setup

build: setup
	$(CARGO) build --release

run: build
	./target/release/dlserve --addr $(ADDR) --models-dir models

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --all-features -- -D warnings

# Tests run in release mode (libtorch-heavy code, and one profile to build) under nextest, which
# gives every test its own process so memory measurements are not polluted by other tests.
# `fault-injection` compiles the worker-panic hook the tests use; release binaries never have it.
test: lint
	@command -v cargo-nextest >/dev/null || $(CARGO) install --locked cargo-nextest
	$(CARGO) nextest run --release --all-features --no-fail-fast
	$(CARGO) build --release --bin dlserve
	scripts/api-fuzz 20
	scripts/validate-manifests
	scripts/deny

# `make test` as on a new machine: a fresh clone with an empty CARGO_HOME, pip cache and venv
# (scripts/fresh-check). Run it whenever the set-up or dependencies change; prints its time.
fresh-check:
	scripts/fresh-check

openapi: setup
	$(CARGO) run --quiet --bin openapi > openapi/openapi.json

models: setup
	@test -d /usr/share/games/fortunes || apt-get install -y --no-install-recommends fortunes fortunes-min
	.venv/bin/python training/train_all.py

fixtures: setup
	.venv/bin/python tests/fixtures/make_fixtures.py

# Benchmarks (issues 9, 4 and 24), in under 30 minutes on a 2-core machine (BENCH_ARGS=--quick for a smoke
# run; scripts/bench --help for the rest). First part, scripts/bench (about 22 min): dlserve against FastAPI,
# TorchServe, LitServe and Ray Serve on the same model files, after an answer check; open-loop load with oha,
# batching on/off, in-process limit; BENCHMARKS.md "CPU benchmark", bench/plots/*.png, bench/results.json.
# Second part, scripts/bench-floor (about 4 min): the HTTP floor (examples/http_floor.rs) and a perf profile of
# every workload; BENCHMARKS.md "The HTTP floor and where the CPU goes", bench/floor.json. The other bench
# targets below are separate; `make bench-all` runs them all but traces and threads (about 1 h 15 min).
bench: build
	@scripts/bench-setup
	$(CARGO) build --release --example http_floor
	.cache/bench-venv/bin/python scripts/bench $(BENCH_ARGS)
	.cache/bench-venv/bin/python scripts/bench-floor $(if $(findstring --quick,$(BENCH_ARGS)),--quick,)

bench-all: bench bench-formats bench-kinds bench-lm bench-protocols bench-scale

# The Open Inference Protocol's wire formats, REST JSON, REST binary and gRPC, on every default
# model in one run (about 17 min on 2026-12-03; BENCHMARKS.md "REST JSON, REST binary and gRPC").
bench-protocols: build
	scripts/bench-protocols $(PROTOCOLS_ARGS)

# TorchScript against .pt2 for every default model with both files (about 6 min; BENCHMARKS.md
# "TorchScript against .pt2"): in-process items/s by batch size and served maximum at p99 <= 50 ms.
bench-formats: build
	@scripts/bench-setup
	.cache/bench-venv/bin/python scripts/bench-formats $(BENCH_ARGS)

# POST /detect, /denoise and /embed (rows and images) against the FastAPI peer (torchvision NMS), batching
# on vs off, after an answer check (about 7 min; bench/kinds.json, BENCHMARKS.md "Detector, denoiser and
# embeddings against FastAPI"). BENCH_ARGS=--quick for a smoke run that leaves BENCHMARKS.md alone.
bench-kinds: build
	@scripts/bench-setup
	.cache/bench-venv/bin/python scripts/bench-kinds $(BENCH_ARGS)

# What OpenTelemetry traces cost (issue 22): POST /anomaly and POST /classify with traces off, on with
# OTEL_TRACES_SAMPLER=always_off, and on with always_on exporting every span to a local sink, interleaved over
# 3 rounds: maximum at p99 <= 50 ms, latency and server CPU per request at a fixed rate (about 12 min; waits
# first for a running training job; bench/traces.json, BENCHMARKS.md "Cost of OpenTelemetry traces").
# Not part of `make bench`. BENCH_ARGS=--quick for a smoke run that leaves BENCHMARKS.md alone.
bench-traces: build
	@scripts/bench-setup
	.cache/bench-venv/bin/python scripts/bench-traces $(BENCH_ARGS)

# POST /complete, streamed greedy completions from the language models (fortunes-lstm, and fortunes-gru when
# present) to 1, 8 and 64 closed-loop streams (examples/lm_load.rs): dlserve with continuous batching, with
# max_batch_size = 1, and the FastAPI peer (bench/peers/lm_app.py, one Python loop per request), after an
# answer check (about 3.5 min per model; bench/lm.json, BENCHMARKS.md "Text generation (POST /complete)
# against FastAPI"). BENCH_ARGS=--quick for a smoke run that leaves BENCHMARKS.md alone.
bench-lm: build
	@scripts/bench-setup
	$(CARGO) build --release --example lm_load
	.cache/bench-venv/bin/python scripts/bench-lm $(BENCH_ARGS)

# Scale in models (issue 24 point 5): 1, 10 and 100 copies of the default models; cold start, RSS, threads,
# idle CPU and one model's latency while the others idle (about 12 min; bench/scale.json, BENCHMARKS.md
# "Scale in models"). BENCH_ARGS=--quick for a smoke run that leaves BENCHMARKS.md alone.
bench-scale: build
	@scripts/bench-setup
	.cache/bench-venv/bin/python scripts/bench-scale $(BENCH_ARGS)

# Intra-op threads per model: 1 vs one per core vs the server's rule, all four models served
# (about 10 min; writes bench/threads.json, prints markdown tables; BENCHMARKS.md "Threads per model").
bench-threads: build
	scripts/bench-threads

# Container image: builds docker/Dockerfile (both variants) with podman, runs it and checks every
# endpoint (docker/smoke-test). Long, needs root; not part of `make test`. Installs podman, runc
# and debootstrap when missing and builds the base images locally (docker/make-base-images).
docker-smoke:
	docker/smoke-test

# Offline schema validation of docker/k8s (Kubernetes, kustomize overlays, KServe) and
# docker/compose.yaml.
.PHONY: validate-manifests
validate-manifests: setup
	scripts/validate-manifests

# Long reliability tests (issues 10 and 23): overload at ~10x capacity for 60 s per endpoint, 100
# concurrent 4096x4096 PNGs against the decode budget (~1 min), slow/silent/idle/too many
# connections (~2 min), a soak of SOAK_MINUTES with a model reload every minute, and the cargo fuzz
# targets for FUZZ_SECONDS each.
# Every part runs even if an earlier one fails; STRESS.md gets the measured results, and the
# target fails if any bar did. About 25 minutes with the defaults on a 2-core machine.
SOAK_MINUTES ?= 10
FUZZ_SECONDS ?= 120
stress: build
	@mkdir -p bench/out
	rm -f bench/out/overload.json bench/out/soak.json bench/out/soak.md bench/out/fuzz.json bench/out/decode.json bench/out/conn.json bench/out/tls.json
	-scripts/stress-overload --out bench/out/overload.json
	-scripts/stress-decode --out bench/out/decode.json
	-scripts/stress-conn --out bench/out/conn.json
	-scripts/stress-tls --out bench/out/tls.json
	-scripts/stress-soak $(SOAK_MINUTES) --out bench/out/soak.json --md bench/out/soak.md
	-scripts/fuzz $(FUZZ_SECONDS)
	scripts/stress-report bench/out STRESS.md

# Licences, bans, sources and RustSec advisories of every dependency (cargo-deny; the advisory
# database from a live fetch, else the dated offline snapshot). See deny.toml and scripts/deny.
.PHONY: deny
deny:
	scripts/deny

# Browser tests of the playground (/) and the API docs (/docs), issue 22: Debian's chromium driven by
# Playwright against target/release/dlserve with the default models, directly and behind a reverse proxy
# at /dlserve/; fails on any console error or warning, any request to another host, and axe-core
# violations of impact serious or critical. About 1 min after the build; tests/browser/setup installs
# chromium, .cache/browser-venv and axe-core once. Screenshots: tests/browser/artifacts/ and docs/screenshots/.
.PHONY: browser-test
browser-test: build
	tests/browser/setup
	.cache/browser-venv/bin/pytest tests/browser -q -p no:cacheprovider -rs
