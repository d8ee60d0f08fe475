# dlserve — see README.md. Every target sets up the venv (libtorch) first if needed.
SHELL := /bin/bash
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(CURDIR)/.venv/bin:$(PATH)
CARGO ?= cargo
ADDR ?= 127.0.0.1:8080

.PHONY: setup build run test openapi models fixtures bench stress docker-smoke lint

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
	$(CARGO) nextest run --release --all-features --no-fail-fast

openapi: setup
	$(CARGO) run --quiet --bin openapi > openapi/openapi.json

models: setup
	.venv/bin/python training/train_all.py

fixtures: setup
	.venv/bin/python tests/fixtures/make_fixtures.py
