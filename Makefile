PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.yaml

.PHONY: run test lint format bench clean

$(BIN)/gateway: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,postgres]'
	touch $(BIN)/gateway

run: $(BIN)/gateway
	$(BIN)/gateway serve --config $(CONFIG)

test: $(BIN)/gateway
	$(BIN)/ruff check gateway tests examples bench
	$(BIN)/ruff format --check gateway tests examples bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(BIN)/gateway
	$(BIN)/ruff check gateway tests examples bench
	$(BIN)/ruff format --check gateway tests examples bench
	$(BIN)/lint-imports

format: $(BIN)/gateway
	$(BIN)/ruff check --fix gateway tests examples bench
	$(BIN)/ruff format gateway tests examples bench

bench: $(BIN)/gateway
	$(BIN)/python bench/decision.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/propagation.py --backend postgres
	$(BIN)/python bench/propagation.py --backend sqlite

clean:
	rm -rf $(VENV) data .pytest_cache
