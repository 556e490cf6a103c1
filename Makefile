# Flagstaff — every developer and CI entry point.
# `make up` and `make test` are the two set-up commands; both install first.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt-installed
APT_PACKAGES := etcd-client etcd-server chromium

.PHONY: install apt-deps lint test up sim bench bench-compare bench-check-perf bench-discovery robustness clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests and benchmarks use (the real etcd and etcdctl; chromium for tests/browser/).
$(APT_STAMP): Makefile | $(BIN)/python
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	touch $(APT_STAMP)

install: $(STAMP) $(APT_STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy consensus flags/engine

test: lint
	$(BIN)/pytest

up: install
	$(BIN)/flagstaff up

sim: install
	$(BIN)/flagstaff sim --seeds 100000 --progress

bench: install
	$(BIN)/flagstaff bench-core

# Flagstaff vs etcd on fresh local 3-member clusters (~8 min); updates docs/performance.md.
bench-compare: install
	$(BIN)/python -m consensus.bench.compare --write-docs

# etcdctl check perf --load=m on fresh 3-member Flagstaff and etcd clusters, alternating
# (CHECK_PERF_ARGS="--prefill 150000" runs it against a large store)
bench-check-perf: install
	$(BIN)/python -m consensus.bench.check_perf_runs $(CHECK_PERF_ARGS)

# 1,000 service instances renewing their leases every second through the discovery Registry
# (~2 min); prints the CPU of the Registry and of each core member (docs/performance.md).
bench-discovery: install
	$(BIN)/python -m discovery.bench --instances 1000 --interval 1 --ttl 5

# The SDK's benchmarks (docs/performance.md, "SDK"): evaluations/s next to launchdarkly-server-sdk
# and UnleashClient, save -> callback propagation to 1/100/1,000 clients, memory per client.
bench-sdk: install
	$(BIN)/python -m flags.sdk.bench

# Long robustness sweep (docs/robustness.md): random fault schedules on 3/5-member clusters,
# every history checked; ROBUSTNESS_ARGS e.g. "--minutes 60" or "--only-seed 1234".
ROBUSTNESS_ARGS ?= --runs 30
robustness: install
	$(BIN)/python -m tests.robustness.sweep $(ROBUSTNESS_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
