# steerboard: the two front-door commands are `make demo` and `make test`.
SHELL := /bin/bash
# OpenMP threads sleep rather than spin while waiting (see steerboard/_runtime_env.py)
export OMP_WAIT_POLICY ?= PASSIVE
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 CPU lies on the dev/CI disk; on other machines point TORCH_SPEC/PIP_TORCH_ARGS at a CPU build
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
STAMP := $(VENV)/.steerboard-installed
DISPLAY_MODE ?= plain

.PHONY: setup demo test test-fast test-avx2 lint browser

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	@# torch first, pinned, so nothing below pulls a multi-GB CUDA build
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --disable-pip-version-check $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	@$(PY) -m pip install -q --disable-pip-version-check -e ".[all]"
	@touch $(STAMP)
	@echo "steerboard: environment ready in $(VENV)"

# headless Chromium for the leaderboard browser tests (Debian packages)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	    || echo "steerboard: could not install chromium (browser tests will fail)"; }

test: setup browser
	$(VENV)/bin/steerboard model fetch -q >/dev/null
	$(VENV)/bin/python -m pytest -q

# the loop while editing: every test not marked slow (tests/conftest.py), under 2 minutes on 2 cores
test-fast: setup
	$(VENV)/bin/steerboard model fetch -q >/dev/null
	$(VENV)/bin/python -m pytest -q -m "not slow"

# the kernel-sensitive tests again on an AVX2-only CPU's code path (oneDNN and ATen capped, so precision detection
# resolves float32 and no AMX row blocks), whatever this CPU is: an AMX or AVX-512 machine checks the other kind
test-avx2: setup
	$(VENV)/bin/steerboard model fetch -q >/dev/null
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(VENV)/bin/python -m pytest -q -m numerics

demo: setup
	@start=$$(date +%s); \
	$(VENV)/bin/steerboard model fetch -q && \
	$(VENV)/bin/steerboard run --suite quick --log-dir logs --display $(DISPLAY_MODE) && \
	$(VENV)/bin/steerboard ingest --logs logs --db results.duckdb && \
	$(VENV)/bin/steerboard build --db results.duckdb --out site && \
	echo "steerboard demo: done in $$(( $$(date +%s) - start )) s -- logs in logs/, database results.duckdb, leaderboard site/index.html"

lint: setup
	$(VENV)/bin/ruff check .
