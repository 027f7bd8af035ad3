# tickstream — the two front-door commands are `make run` and `make test`.
SHELL := /bin/bash
# The venv's interpreter: the distribution's python3 when it is 3.11+ and can make a venv —
# distributions build it with PGO and LTO, as the Docker image's python:3.11-slim is (on
# the development machine it runs pure Python 1.35× as fast as the pyenv build on PATH,
# which is not optimised) — else python3 on PATH. `PYTHON=… make install` overrides it.
SYSTEM_PYTHON := /usr/bin/python3
PYTHON ?= $(shell $(SYSTEM_PYTHON) -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && echo $(SYSTEM_PYTHON) || echo python3)
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
