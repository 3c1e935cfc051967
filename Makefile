# Two commands do all the set-up on a fresh machine:
#   make demo   -> creates .venv, installs flowscope, trains a small flow on pinwheel, writes a report
#   make test   -> creates .venv, installs flowscope with test extras, runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13.0 is on this machine's disk; GPU users: see README.
TORCH ?= torch==2.13.0

$(BIN)/flowscope: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,mnist,faces]"
	touch $(BIN)/flowscope

setup: $(BIN)/flowscope

demo: setup
	$(BIN)/flowscope demo

test: setup
	$(BIN)/python -m pytest

.PHONY: setup demo test
