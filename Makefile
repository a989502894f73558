# Quick start:  make demo   (set up, archive + retrieve a sample lineage)
#               make test   (set up, run the test suite)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m pas.demo

test: setup
	$(BIN)/python -m pytest -q

bench-setup: setup
	$(BIN)/python -m pip install -q -e '.[dev,bench]'

bench: bench-setup
	$(BIN)/python -m bench.core

bench-quick: bench-setup
	$(BIN)/python -m bench.core --quick

clean:
	rm -rf $(VENV) demo-repo .pytest_cache
