# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(PY) demo/serve.py

test: $(VENV)/.installed
	$(PY) -m pytest

# Benchmarks against jupyter_client and jupyter_server's /channels (a few minutes; not a test).
bench: $(VENV)/.installed
	$(PY) -m benchmarks --readme
	$(PY) -m benchmarks.gateway

clean:
	rm -rf $(VENV) .pytest_cache
