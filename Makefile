SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.yaml
# Debian packages the tests need (installing them needs root: CI and containers run as root)
APT := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run test test-fast test-deps lint format bench fuzz clean clean-data

# `make run` installs what running needs; `make test` adds the test tools to the same venv.
$(VENV)/.run: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements.lock -e '.[postgres]'
	touch $@

$(VENV)/.test: pyproject.toml requirements.lock $(VENV)/.run
	$(BIN)/pip install --quiet -c requirements.lock -e '.[test,postgres]'
	touch $@

run: $(VENV)/.run
	$(BIN)/gateway serve --config $(CONFIG)

# Chromium for the console tests; PostgreSQL's and Redis's binaries when no server answers at
# 127.0.0.1:5432 / :6379 (the tests then start throwaway ones of their own).
test-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "installing Debian's chromium for the console tests ..."; \
		$(APT) update -qq && $(APT) install -y -qq chromium >/dev/null; fi
	@if [ -z "$$(fc-list :lang=zh 2>/dev/null)" ]; then \
		echo "installing a Chinese font, so the console's Chinese screenshots show text ..."; \
		$(APT) update -qq && $(APT) install -y -qq fonts-wqy-zenhei >/dev/null; fi
	@if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian's postgresql for a throwaway test server ..."; \
		$(APT) update -qq && $(APT) install -y -qq postgresql >/dev/null; fi
	@if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && ! command -v redis-server >/dev/null; then \
		echo "installing Debian's redis-server for a throwaway test server ..."; \
		$(APT) update -qq && $(APT) install -y -qq redis-server >/dev/null; fi
	@if [ ! -x /usr/sbin/nginx ]; then \
		echo "installing Debian's nginx (forward authorization through auth_request) ..."; \
		$(APT) update -qq && $(APT) install -y -qq nginx >/dev/null; fi

# axe-core (npm) for the console's accessibility check: the test injects it into the page.
AXE := .cache/axe/node_modules/axe-core/axe.min.js
$(AXE):
	@command -v npm >/dev/null || { $(APT) update -qq && $(APT) install -y -qq npm >/dev/null; }
	npm install --silent --no-audit --no-fund --prefix .cache/axe axe-core@4.14.1

test: lint test-deps $(AXE)
	$(BIN)/python -m pytest -q

# The fast lane (tests/conftest.py assigns it): pure code, tables and the admin API on SQLite;
# no PostgreSQL, no browser; about 700 tests in 15-17 s on 2 cores. Only the plugins it uses
# are loaded: autoloading them all imports schemathesis and hypothesis at start and rewrites
# the asserts of each plugin's whole package, recompiled on every run where no bytecode is
# written (PYTHONDONTWRITEBYTECODE): tests/test_wire.py took 3.0-3.4 s, 1.2-1.3 s this way.
# The shortcut differential's pure half draws 500 cases per shortcut here, 2,000 in `make test`.
test-fast: $(VENV)/.test
	GATEWAY_PROPERTY_EXAMPLES=20 PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 \
		$(BIN)/python -m pytest -q -m fast -p asyncio -p timeout -p hypothesispytest

# ruff, the import contracts, and mypy (strict on core, wire, proxy and keyring: pyproject.toml)
lint: $(VENV)/.test
	$(BIN)/ruff check gateway tests examples bench
	$(BIN)/ruff format --check gateway tests examples bench
	$(BIN)/lint-imports
	$(BIN)/mypy

format: $(VENV)/.test
	$(BIN)/ruff check --fix gateway tests examples bench
	$(BIN)/ruff format gateway tests examples bench

bench: $(VENV)/.test
	$(BIN)/python bench/decision.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/propagation.py --backend postgres
	$(BIN)/python bench/propagation.py --backend sqlite

# The shortcut differential at length: 100,000 variants per shortcut against the parsers, and
# 2,000 over real sockets (learnt connection against a fresh one).
fuzz: $(VENV)/.test
	$(BIN)/python bench/fuzz_shapes.py --cases 100000
	GATEWAY_PROPERTY_EXAMPLES=2000 $(BIN)/python -m pytest -q -p no:randomly tests/test_shape_differential.py

# Keeps data/ (the database and the secret key that decrypts it): see clean-data.
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .grimp_cache .import_linter_cache test-output .cache

clean-data:
	@echo "data/ holds the key database AND the secret key that decrypts it: without the secret key"
	@echo "every API key is lost for good. Back it up first (docs/operations.md)."
	@if [ "$(CONFIRM)" != "yes" ]; then echo "Run 'make clean-data CONFIRM=yes' to delete data/."; exit 1; fi
	rm -rf data
