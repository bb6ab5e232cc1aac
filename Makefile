# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test bench docs clean

$(VENV)/.installed: pyproject.toml
	@echo "Setting up $(VENV): jupyter_transports and what its demo (JupyterLab) and tests need (a minute or two, once)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	set -o pipefail; $(PY) -m pip install --progress-bar off -e ".[test,demo]" \
		| { grep -E "^(Collecting|Successfully|ERROR)" || true; }
	touch $@

# The widgets' browser bundle: the install builds it; rebuilt here when js/ changed since.
WIDGETS := jupyter_transports/static/widgets/widgets.js
$(WIDGETS): js/package.json js/package-lock.json js/build.mjs $(wildcard js/src/*) | $(VENV)/.installed
	cd js && npm install --no-audit --no-fund && npm run build

# make demo ARGS="--ServerApp.allow_origin=http://localhost:8000"   (any jupyter server option)
demo: $(VENV)/.installed $(WIDGETS)
	$(PY) demo/serve.py $(ARGS)

test: $(VENV)/.installed $(WIDGETS)
	$(PY) -m pytest

# The documentation site, into docs/_build/html (warnings are errors).
docs: $(VENV)/.docs-installed
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "Open docs/_build/html/index.html"

$(VENV)/.docs-installed: $(VENV)/.installed
	@echo "Adding what the docs need to $(VENV): sphinx, pydata-sphinx-theme, myst-parser"
	set -o pipefail; $(PY) -m pip install --progress-bar off -e ".[test,demo,docs]" \
		| { grep -E "^(Collecting|Successfully|ERROR)" || true; }
	touch $@

# Benchmarks against jupyter_client and jupyter_server's /channels (a few minutes; not a test).
bench: $(VENV)/.installed
	$(PY) -m benchmarks --docs
	$(PY) -m benchmarks.gateway

clean:
	rm -rf $(VENV) .pytest_cache docs/_build
