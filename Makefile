# roost: `make up` runs a server, `make test` runs the whole suite. Both install what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: up test lint typecheck pytest install dev clean bench bench-compare compile uncompiled

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The stamps re-run pip only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[compile]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# The message path's hottest modules compiled with mypyc (roost.compiled), again whenever one
# of them changes. Without a C compiler the build says so and roost runs as plain Python.
COMPILED := $(shell sed -n 's/^    "\(roost\/.*\.py\)",$$/src\/\1/p' src/roost/compiled.py)
src/roost/compiled.json: $(COMPILED) src/roost/compiled.py | $(VENV)/.installed
	$(BIN)/python src/roost/compiled.py build

compile: src/roost/compiled.json

uncompiled:
	$(BIN)/python src/roost/compiled.py clean

up: $(VENV)/.installed compile
	$(BIN)/roost up $(ARGS)

lint: dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: dev
	$(BIN)/mypy

pytest: dev compile
	$(BIN)/python -m pytest $(ARGS)

test: lint typecheck pytest

bench: dev compile
	$(BIN)/python -m benchmarks.roost_server $(ARGS)

# roost against ejabberd, Prosody and PyJabber (installs them if missing; see benchmarks/compare.py).
bench-compare: dev compile
	$(BIN)/python -m benchmarks.compare $(ARGS)

clean:
	rm -rf $(VENV) build dist src/build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
	rm -f src/*__mypyc*.so src/roost/*/*.so src/roost/compiled.json
