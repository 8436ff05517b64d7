# Developer shortcuts. CI runs `make ci` (bash .ci/run), which makes its own fresh venv.
# The other targets use the venv in $(VENV) (created by `make install`).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install lint typecheck test bench ci docs demo

install: ## create $(VENV) if needed and install genderd with its test tools
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'

lint: ## ruff: lint rules and formatting
	$(BIN)/ruff check genderd tests scripts loadtests
	$(BIN)/ruff format --check genderd tests scripts loadtests

typecheck: ## mypy --strict on the package (configured in pyproject.toml)
	$(BIN)/mypy

test: ## pytest with the pyproject.toml configuration (starts its own servers)
	$(BIN)/pytest

bench: ## pipeline throughput and lookup latency on a server of its own (prints a table)
	$(BIN)/python scripts/bench_pipeline.py

ci: ## exactly what CI runs, in a throw-away venv
	bash .ci/run

docs: ## build the documentation site strictly (mkdocs-material, into site/)
	$(VENV)/bin/pip install -q -e '.[docs]' && NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

demo: ## bundled server + a worker per model + demo traffic, until Ctrl-C
	$(BIN)/genderd up --demo
