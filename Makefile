# Basalt's two entry points: `make run` and `make test`. Both set up everything they need
# (models via pip, a Python virtual environment for the SDK suite) and are quick when it is
# already there.

CARGO ?= cargo
PYTHON ?= python3
CARGO_TARGET_DIR ?= target
VENV ?= .venv
JS ?= tests/interop/js
HOST ?= 127.0.0.1
PORT ?= 8080

export CARGO_TARGET_DIR

.PHONY: run test test-baseline models venv js browser lint

## Fetch the default models if missing, build, and serve them on $(HOST):$(PORT).
run: models
	$(CARGO) build --release -p basalt
	$(CARGO_TARGET_DIR)/release/basalt serve --host $(HOST) --port $(PORT)

## The whole test suite: Rust unit, fidelity and HTTP tests, then the SDK interoperability suite,
## each with a throwaway PostgreSQL and Redis for the scale-out tests (scripts/with-services).
test: models venv js browser
	$(CARGO) build -p basalt
	BASALT_REQUIRE_SERVICES=1 scripts/with-services $(CARGO) test --workspace
	$(MAKE) test-baseline
	BASALT_REQUIRE_SERVICES=1 BASALT_REQUIRE_BROWSER=1 BASALT_BIN=$(CARGO_TARGET_DIR)/debug/basalt \
		scripts/with-services $(VENV)/bin/python -m pytest -q tests/interop
	BASALT_REQUIRE_SERVICES=1 BASALT_TOPOLOGY=replicas BASALT_BIN=$(CARGO_TARGET_DIR)/debug/basalt \
		scripts/with-services $(VENV)/bin/python -m pytest -q $(REPLICATED_SUITES)

## The SDK suites that run a second time against three replicas on PostgreSQL and Redis
## behind a round-robin balancer (BASALT_TOPOLOGY=replicas). Not here: suites that start
## their own servers, and those keeping files in one replica's data directory (files,
## batches, jobs, knowledge bases).
REPLICATED_SUITES = $(addprefix tests/interop/,test_openai_sdk.py test_anthropic_sdk.py \
	test_bedrock_boto3.py test_tools.py test_embeddings.py test_images.py test_responses.py \
	test_langchain.py test_js_sdk.py test_reasoning.py test_guardrails.py)

## The kernel tests again in a build for a baseline x86-64 CPU (what a portable binary is):
## there each SIMD level's features exist only inside its own functions, the configuration
## where a kernel could lose its intrinsics' inlining or run code the level lacks. The
## normal build is for the build machine's CPU (.cargo/config.toml).
test-baseline:
	@if [ "$$(uname -m)" = x86_64 ]; then \
		RUSTFLAGS="-C target-cpu=x86-64-v2" CARGO_TARGET_DIR=$(CARGO_TARGET_DIR)/baseline \
			$(CARGO) test -p basalt-engine --lib kernels; \
	fi

models:
	$(PYTHON) scripts/fetch-models --quiet

## Debian's Chromium, for the console's browser tests (Playwright drives it; installed
## with apt when missing and running as root, as CI does).
browser:
	@command -v chromium >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian's chromium for the browser tests" >&2; \
			export DEBIAN_FRONTEND=noninteractive; \
			apt-get install -y -qq chromium >/dev/null \
				|| { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; \
		else \
			echo "the console's browser tests need Chromium: apt-get install chromium" >&2; exit 1; \
		fi; }

venv: $(VENV)/.installed

$(VENV)/.installed: tests/interop/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
	touch $@

## The AWS SDK for JavaScript, for the HTTP/2 interop tests (versions pinned by the lock).
js: $(JS)/node_modules/.installed

$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
