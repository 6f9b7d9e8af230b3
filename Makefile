# queue-autoscaler — the two commands: `make demo` (the demo on the devstack) and `make test` (everything).
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)

.PHONY: venv test lint unit integration devstack-up devstack-down demo bench clean

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

devstack-up: venv
	devstack/up

devstack-down:
	devstack/down

## Everything CI runs: lint, type check, import layers, then unit, integration and e2e tests on the devstack.
test: venv lint devstack-up
	.venv/bin/pytest -q

demo: venv devstack-up
	$(PY) -m bench.demo

clean: devstack-down
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
