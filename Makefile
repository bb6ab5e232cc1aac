# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	@echo "Setting up $(VENV): jupyter_transports and what its demo and tests need (a minute or two, once)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	set -o pipefail; $(PY) -m pip install --progress-bar off -e ".[test]" \
		| { grep -E "^(Collecting|Successfully|ERROR)" || true; }
	touch $@

# make demo ARGS="--ServerApp.allow_origin=http://localhost:8000"   (any jupyter server option)
demo: $(VENV)/.installed
	$(PY) demo/serve.py $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest

# Benchmarks against jupyter_client and jupyter_server's /channels (a few minutes; not a test).
bench: $(VENV)/.installed
	$(PY) -m benchmarks --readme
	$(PY) -m benchmarks.gateway

clean:
	rm -rf $(VENV) .pytest_cache
