# The commands people type. `make run` and `make test` build .venv themselves when needed.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
LOCKS := tools/locks
# Every environment installs from the locks in tools/locks (tools/locks.py says what each holds)
# and never resolves: `make lock` writes them on purpose, `make upgrade` moves versions forward.
# Re-install when a lock (or the project's own metadata) changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(LOCKS)/installers.txt $(LOCKS)/dev.txt $(LOCKS)/torch-cpu.txt | sha1sum | cut -c1-12)
# Where the CPU build of torch is found: the machine's pip find-links (which uv does not read)
# where it has one, PyTorch's CPU page otherwise. torch-cpu.txt pins its hash either way.
TORCH_FIND_LINKS ?= $(or $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null),https://download.pytorch.org/whl/cpu/torch/)
export TORCH_FIND_LINKS

CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-$(shell sha1sum $(LOCKS)/checkov.txt | cut -c1-12)

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

.PHONY: drill help setup lock upgrade run run-selfhosted dev dev-down services browser bench bench-compare bench-weights bench-dialects soak model test test-unit test-integration test-e2e lint format clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# The installers first (pip only bootstraps uv, ignoring the machine's pip configuration), then
# exactly the locks: `uv pip sync` adds, upgrades and removes until .venv holds what they say,
# checking every hash. Then the project itself, editable, built by the locked setuptools.
$(STAMP): pyproject.toml $(LOCKS)/installers.txt $(LOCKS)/dev.txt $(LOCKS)/torch-cpu.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required: the locks are resolved for it, as the images run it (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(BIN)/python -m pip install --isolated --quiet --no-deps --require-hashes -r $(LOCKS)/installers.txt
	$(UV) pip sync --quiet --python $(BIN)/python --require-hashes --find-links '$(TORCH_FIND_LINKS)' \
		$(LOCKS)/installers.txt $(LOCKS)/dev.txt $(LOCKS)/torch-cpu.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-*
	touch $@

# checkov in its own venv: it breaks when python-hcl2 (in .venv) shares its environment.
$(CHECKOV_STAMP): $(LOCKS)/checkov.txt | $(STAMP)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv --without-pip $(CHECKOV_VENV)
	$(UV) pip sync --quiet --python $(CHECKOV_VENV)/bin/python --require-hashes $(LOCKS)/checkov.txt
	rm -f $(CHECKOV_VENV)/.installed-*
	touch $@

setup: $(STAMP) ## Create .venv from the locks (tools/locks): API, worker and dev dependencies

lock: $(STAMP) ## Re-resolve tools/locks/*.txt after a change to pyproject.toml or tools/locks/*.in (keeps pins that still fit)
	$(BIN)/python tools/locks.py compile

upgrade: $(STAMP) ## Move every locked version to the newest that fits; review the diff, commit it alone
	$(BIN)/python tools/locks.py upgrade
	git --no-pager diff --stat -- $(LOCKS)

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

bench-compare: $(STAMP) ## Print the serving CPU per job of this tree against REF (default main), both services side by side: make bench-compare REF=HEAD~1
	$(BIN)/python -m bench.compare $(or $(REF),main)

bench-weights: $(STAMP) ## Print the tiny model's bytes as fp32 vs fp16 variant, and the worker's start to /readyz from each folder
	$(BIN)/python -m bench.model_weights

bench-dialects: $(STAMP) ## Print the latency of the OpenAI and AUTOMATIC1111 dialects over the native submit + wait for the same job (embedded profile)
	$(BIN)/python -m bench.dialects

drill: $(STAMP) services ## The recovery drill on the emulator stack: 12 jobs, the worker SIGKILLed, restarted at once and after 2 min; prints the figures
	DRILL_OUTAGES=0,120 $(BIN)/python -m pytest -q -s tests/e2e/test_recovery_drill.py

soak: $(STAMP) ## Load test on the emulator stack (SOAK_USERS, SOAK_KEYS, SOAK_DURATION_S); reconciles every job, prints JSON
	$(BIN)/python -m tests.load

model: $(STAMP) ## Build the tiny offline development model into .data/models/tiny-sd
	$(BIN)/python -m gpu_worker.tiny_model --output .data/models/tiny-sd

# The suite on TEST_WORKERS processes (pytest-xdist). Half of an e2e test's time is waiting on
# the processes it drives, so two workers fill the two cores that one leaves half idle. Tests
# that share a session service (the emulator stack, the embedded service) run on one worker in
# their serial order; the others go a test file at a time (tests/conftest.py).
TEST_WORKERS ?= 2

test: $(STAMP) lint services browser ## make lint, then every test suite (unit, integration, e2e), on TEST_WORKERS processes
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup tests

test-unit: $(STAMP) ## Unit tests only (no network, no model)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) services ## Integration tests (SQLite, filesystem, the real tiny pipeline)
	$(BIN)/python -m pytest tests/integration

test-e2e: $(STAMP) services browser ## The API over HTTP with the inline queue generating real PNGs
	$(BIN)/python -m pytest tests/e2e

lint: $(STAMP) $(CHECKOV_STAMP) ## lock check, ruff, mypy, import graph, bandit, hadolint, shellcheck, terraform fmt, checkov, infrastructure tests
	$(BIN)/python tools/locks.py check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/bandit -c pyproject.toml -q -r api dal gpu_worker emulators bench tools clients/python/txt2img_client
	$(BIN)/hadolint --config .hadolint.yaml api/Dockerfile gpu_worker/Dockerfile
	$(BIN)/shellcheck --enable=all terraform/vm/startup.sh terraform/gke/deploy.sh tools/ensure-chromium.sh
	@if command -v terraform >/dev/null; then TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive terraform; \
	elif [ "$$CI" = true ]; then echo "terraform is required in CI" >&2; exit 1; \
	else echo "terraform not installed: skipping terraform fmt"; fi
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(CHECKOV_VENV)/bin/checkov --config-file .checkov.yaml
	$(BIN)/python tools/import_graph.py check
	$(BIN)/python -m pytest -q tests/unit/infra tests/unit/test_import_graph.py

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove the virtualenv, caches and local data
	rm -rf $(VENV) $(CHECKOV_VENV) .data .pytest_cache .mypy_cache .ruff_cache *.egg-info
