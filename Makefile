# tickstream — the two front-door commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-fast services bench lint clean

install: $(STAMP)

# Reinstalls only when pyproject.toml changed (or the venv is missing).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

run: install
	$(BIN)/tickstream serve --demo --log-format console

services:
	@bash .ci/services

test: install services
	$(BIN)/pytest --cov --cov-report=term-missing:skip-covered $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -m "not slow" -x -q $(PYTEST_ARGS)

# Every benchmark runs even when one misses its target; the status says whether all met it.
bench: install services
	@status=0; for b in bench_analytics bench_orders bench_ingest bench_fanout; do \
		$(BIN)/python -m loadtest.$$b || status=1; done; exit $$status

lint: install
	$(BIN)/ruff check engine actors protocol loadtest tests
	$(BIN)/ruff format --check engine actors protocol loadtest tests
	$(BIN)/mypy engine actors protocol
	$(BIN)/bandit -q -r engine actors protocol --severity-level medium

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
