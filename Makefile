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
	$(BIN)/pip install -q -e ".[dev,mnist]"
	touch $(BIN)/flowscope

# Debian packages used by the tests and experiments: Fashion-MNIST's IDX files and headless
# Chromium (the report's browser test). Skipped where apt-get is absent or not root; the tests
# that need them then skip with a reason.
system-deps:
	@if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  [ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the tests that need them will skip"; \
	  fi; \
	fi

setup: $(BIN)/flowscope

demo: setup system-deps
	$(BIN)/flowscope demo

test: setup system-deps
	$(BIN)/python -m pytest

.PHONY: setup system-deps demo test
