# Basalt's two entry points: `make run` and `make test`. Both set up everything they need
# (models via pip, a Python virtual environment for the SDK suite) and are quick when it is
# already there.

CARGO ?= cargo
PYTHON ?= python3
CARGO_TARGET_DIR ?= target
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8080

export CARGO_TARGET_DIR

.PHONY: run test models venv lint

## Fetch the default models if missing, build, and serve them on $(HOST):$(PORT).
run: models
	$(CARGO) build --release -p basalt
	$(CARGO_TARGET_DIR)/release/basalt serve --host $(HOST) --port $(PORT)

## The whole test suite: Rust unit, fidelity and HTTP tests, then the SDK interoperability suite.
test: models venv
	$(CARGO) build -p basalt
	$(CARGO) test --workspace
	BASALT_BIN=$(CARGO_TARGET_DIR)/debug/basalt $(VENV)/bin/python -m pytest -q tests/interop

models:
	$(PYTHON) scripts/fetch-models --quiet

venv: $(VENV)/.installed

$(VENV)/.installed: tests/interop/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
	touch $@

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
