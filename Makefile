# Caravan: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA ?= ./caravan-data
DEMO_SHIPMENTS ?= 100000

.PHONY: install system demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Services the tests need from Debian (PostgreSQL's binaries, Chromium), installed
# when missing (as root, as on CI); nothing is installed when they are present.
system:
	bash .ci/postgres.sh
	bash .ci/chromium.sh

demo: $(STAMP)
	$(BIN)/caravan generate --data $(DATA) --shipments $(DEMO_SHIPMENTS) --seed 7
	$(BIN)/caravan validate --data $(DATA)
	$(BIN)/caravan watchlist import --data $(DATA) --national data_contracts/reference/national_watchlist_example.csv --list-name KZ-demo
	$(BIN)/caravan features --data $(DATA)
	$(BIN)/caravan train --data $(DATA)
	$(BIN)/caravan promote --data $(DATA) --version 1 --by demo
	$(BIN)/caravan score --data $(DATA)
	$(BIN)/caravan demo-serve --data $(DATA)

test: $(STAMP) system
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_validate.py
	$(BIN)/python benchmarks/bench_screening.py

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
