# procscope: make test | make demo | make bench | make conformance | make test-all | make test-e2e | make wheels
#
# Every target creates (or reuses) the project's virtual environment and installs what it
# needs, so a fresh machine needs only Python 3.10+ with pip.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3 || command -v python)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.procscope-installed
PYPROJECTS := pyproject.toml $(wildcard core/*/pyproject.toml instrumentation/*/pyproject.toml processors/*/pyproject.toml exporters/*/pyproject.toml)
PACKAGES := $(dir $(wildcard core/*/pyproject.toml instrumentation/*/pyproject.toml processors/*/pyproject.toml exporters/*/pyproject.toml))
PYTEST_WORKERS ?= 2

.PHONY: browser test lint typecheck unit demo bench conformance test-all test-e2e wheels clean venv

venv: $(STAMP)

$(STAMP): $(PYPROJECTS)
	@bash .ci/make-venv "$(PYTHON)" "$(VENV)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(foreach p,$(PACKAGES),-e ./$(p)) -e '.[dev]'
	@touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy

# The viewer's browser tests (tests/ui) drive Debian's Chromium: installed when missing
# (as root, quietly), never downloaded by Playwright itself.
browser:
	@test -x /usr/bin/chromium || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq chromium >/dev/null) || echo "make browser: could not install chromium"; }

unit: $(STAMP) browser
	PROCSCOPE_RAISE_INTERNAL_ERRORS=1 $(PY) -m pytest -n $(PYTEST_WORKERS) -q $(PYTEST_ARGS)

test: lint typecheck unit

demo: $(STAMP)
	rm -rf .demo && mkdir -p .demo
	$(VENV)/bin/procscope demo --db "$(CURDIR)/.demo/procscope.db"

bench: $(STAMP)
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# CPython's regression suites plain and under procscope run (docs/compatibility.md);
# CONFORMANCE_ARGS="--profile ci --check" is the subset .ci/run runs.
conformance: $(STAMP)
	$(PY) conformance/matrix.py $(CONFORMANCE_ARGS)

# The suite on every Python from 3.10 to 3.13 that pyenv provides here.
test-all:
	@set -e; found=0; for v in 3.10 3.11 3.12 3.13; do \
	  py=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python3 2>/dev/null | sort -V | tail -n1); \
	  if [ -z "$$py" ]; then py=$$(command -v python$$v || true); fi; \
	  if [ -z "$$py" ]; then echo "== Python $$v: not available, skipped"; continue; fi; \
	  found=1; echo "== Python $$v ($$py)"; \
	  $(MAKE) --no-print-directory test PYTHON=$$py VENV=.venv-$$v; \
	done; test $$found = 1

test-e2e: $(STAMP)
	$(PY) -m pytest -q -p no:xdist tests/e2e $(PYTEST_ARGS)

wheels: $(STAMP)
	rm -rf dist && mkdir -p dist
	for p in $(PACKAGES) ./; do $(PY) -m build --wheel --outdir dist $$p >/dev/null; done
	ls dist

clean:
	rm -rf $(VENV) .venv-3.* dist build .demo
