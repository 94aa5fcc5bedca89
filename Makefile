# roost: `make up` runs a server, `make test` runs the whole suite. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: up test lint typecheck pytest install dev clean bench bench-compare

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamps re-run pip only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

up: $(VENV)/.installed
	$(BIN)/roost up $(ARGS)

lint: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: dev
	$(BIN)/mypy

pytest: dev
	$(BIN)/python -m pytest $(ARGS)

test: lint typecheck pytest

bench: dev
	$(BIN)/python -m benchmarks.roost_server $(ARGS)

# roost against ejabberd, Prosody and PyJabber (installs them if missing; see benchmarks/compare.py).
bench-compare: dev
	$(BIN)/python -m benchmarks.compare $(ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
