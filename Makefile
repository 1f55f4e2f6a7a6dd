# Set-up is two commands: `make demo` and `make test`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

EMULATOR := $(VENV)/bqemulator/.built

.PHONY: install demo test lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/kalla demo

# The BigQuery stand-in needs its own venv (its pins clash with ours); built once, before tests.
$(EMULATOR): tests/connectors/bigquery/emulator-requirements.txt $(STAMP)
	$(BIN)/python -m tests.connectors.bigquery.emulator
	touch $(EMULATOR)

test: install $(EMULATOR)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadgroup

# Benchmarks run kalla as users install it: no dev or optional extras (pandas alone adds
# 0.3 s to every start, as DataFusion imports it when present).
BENCH := .venv-bench
$(BENCH)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH)
	$(BENCH)/bin/pip install --quiet --upgrade pip
	$(BENCH)/bin/pip install --quiet -e . duckdb==2.0.0
	touch $@

bench: $(BENCH)/.installed
	$(BENCH)/bin/python benchmarks/run.py --kalla $(BENCH)/bin/kalla

clean:
	rm -rf $(VENV) $(BENCH) kalla-output .pytest_cache .mypy_cache
