# queue-autoscaler — the two commands: `make demo` (the demo on the devstack) and `make test` (everything).
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: venv test lint unit unit-compiled integration devstack-up devstack-down demo bench clean

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml
	@echo "[make] creating .venv and installing queue-autoscaler with its dev dependencies" >&2
	@test -x $(PY) || python3 -m venv .venv
	@.venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@rm -f .venv/.installed-* && touch $@

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

unit: venv
	.venv/bin/pytest tests/unit -q

## The activator's unit tests on its compiled form (setup.py; built into $QA_CACHE/compiled once per source).
## Run from / with PYTHONSAFEPATH, so that the package comes from the build, not from this checkout.
unit-compiled: venv
	@site=$$($(PY) -m devstack.compiled) && cd / && \
	  PYTHONSAFEPATH=1 PYTHONPATH="$$site:$(CURDIR)" QUEUE_AUTOSCALER_COMPILED=1 $(CURDIR)/.venv/bin/pytest -q \
	  -p no:cacheprovider -c $(CURDIR)/pyproject.toml --rootdir $(CURDIR) -o pythonpath= --import-mode=append \
	  $(CURDIR)/tests/unit/activator

devstack-up: venv
	devstack/up

devstack-down:
	devstack/down

## Everything CI runs: lint, type check, import layers, the activator's compiled form, then unit, integration
## and e2e tests on the devstack.
test: venv lint unit-compiled devstack-up
	.venv/bin/pytest -q

demo: venv devstack-up
	$(PY) -m bench.demo

clean: devstack-down
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
