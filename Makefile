# The README's two set-up commands are `make run` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PACKAGES := gateway adapters mappings security rules

.PHONY: run test test-fast lint typecheck pytest bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

## run: the main job — the gateway with embedded defaults (./var/) and the bundled partner simulator
run: $(VENV)/.installed
	$(BIN)/xgw serve --with-simulator

## test: lint, format check, type check, then the whole test suite (Redis on 127.0.0.1:6379)
test: lint typecheck pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check $(PACKAGES) tests bench
	$(BIN)/ruff format --check $(PACKAGES) tests bench

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q -ra -n 2 --dist loadgroup

## test-fast: the unit and integration tests only (no real processes), for the edit loop
test-fast: $(VENV)/.dev-installed
	$(BIN)/python -m pytest -q -ra -m "unit or integration"

bench-smoke: $(VENV)/.dev-installed
	@for script in bench/*.py; do case "$$script" in */__init__.py|*/_*.py) continue;; esac; echo "== $$script --smoke"; $(BIN)/python $$script --smoke || exit 1; done

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
