# steerboard: the two front-door commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 CPU lies on the dev/CI disk; on other machines point TORCH_SPEC/PIP_TORCH_ARGS at a CPU build
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
STAMP := $(VENV)/.steerboard-installed

.PHONY: setup demo test lint browser clean-site

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

demo: setup
	$(VENV)/bin/steerboard model fetch -q
	@echo "steerboard demo: (suite, ingest and build are added as they land)"

lint: setup
	$(VENV)/bin/ruff check .
