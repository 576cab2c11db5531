# The commands people type. `make run` and `make test` build .venv themselves when needed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell sha1sum tools/requirements-checkov.txt | cut -c1-12)

# For test and lint, independent prerequisites (the two virtualenvs, lint and services) build
# side by side. No --output-sync: it would hold pytest's whole output back until it ends.
ifneq ($(filter test lint,$(MAKECMDGOALS)),)
MAKEFLAGS += --jobs=2
endif

# Some environments set PYTHONDONTWRITEBYTECODE; the tests start dozens of Python processes,
# and each would compile the project's modules (and pytest its rewritten tests) from source.
unexport PYTHONDONTWRITEBYTECODE

export TRANSFORMERS_VERBOSITY ?= error
export HF_HUB_OFFLINE ?= 1

.PHONY: help setup run run-selfhosted dev dev-down services browser bench soak model test test-unit test-integration test-e2e lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned to 2.13.0 in the worker group: pip takes the CPU wheel, not a CUDA build.
	$(BIN)/python -m pip install --quiet -e '.[api,worker,cloud,otel,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# checkov in its own venv: it breaks when python-hcl2 (in .venv) shares its environment.
$(CHECKOV_STAMP): tools/requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r tools/requirements-checkov.txt
	rm -f $(CHECKOV_VENV)/.installed-*
	touch $@

setup: $(STAMP) ## Create .venv with the API, worker and dev dependencies

run: $(STAMP) ## Serve the API with the embedded profile on http://127.0.0.1:8080 (PORT overrides)
	$(BIN)/python -m api

dev: $(STAMP) ## The cloud shape locally: Pub/Sub, Firestore, GCS emulators, Redis, worker, API (Ctrl-C stops)
	$(BIN)/python -m emulators dev

dev-down: $(STAMP) ## Stop whatever a previous `make dev` left running
	$(BIN)/python -m emulators down

services: $(STAMP) ## Make sure Redis and PostgreSQL are up (started if not)
	$(BIN)/python -m emulators services

browser: ## Make sure Debian's Chromium is installed for the web page test (apt-get as root)
	tools/ensure-chromium.sh

run-selfhosted: $(STAMP) ## The self-hosted shape: Redis, PostgreSQL (started if down), Celery GPU worker, API (Ctrl-C stops)
	$(BIN)/python -m emulators selfhosted

bench: $(STAMP) ## Print throughput, latency and cold-start figures as JSON (.data/bench/results.json)
	$(BIN)/python -m bench

soak: $(STAMP) ## Load test on the emulator stack (SOAK_USERS, SOAK_KEYS, SOAK_DURATION_S); reconciles every job, prints JSON
	$(BIN)/python -m tests.load

model: $(STAMP) ## Build the tiny offline development model into .data/models/tiny-sd
	$(BIN)/python -m gpu_worker.tiny_model --output .data/models/tiny-sd

test: $(STAMP) lint services browser ## make lint, then every test suite (unit, integration, e2e)
	$(BIN)/python -m pytest tests

test-unit: $(STAMP) ## Unit tests only (no network, no model)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) services ## Integration tests (SQLite, filesystem, the real tiny pipeline)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP) services browser ## The API over HTTP with the inline queue generating real PNGs
	$(BIN)/python -m pytest tests/e2e

lint: $(STAMP) $(CHECKOV_STAMP) ## ruff, mypy, bandit, hadolint, shellcheck, terraform fmt, checkov, infrastructure tests
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -c pyproject.toml -q -r api dal gpu_worker emulators bench
	$(BIN)/hadolint --config .hadolint.yaml api/Dockerfile gpu_worker/Dockerfile
	$(BIN)/shellcheck --enable=all terraform/vm/startup.sh tools/ensure-chromium.sh
	@if command -v terraform >/dev/null; then TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform; \
	elif [ "$$CI" = true ]; then echo "terraform is required in CI" >&2; exit 1; \
	else echo "terraform not installed: skipping terraform fmt"; fi
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml
	$(BIN)/python -m pytest -q tests/unit/infra

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove the virtualenv, caches and local data
	rm -rf $(VENV) $(CHECKOV_VENV) .data .pytest_cache .mypy_cache .ruff_cache *.egg-info
