# The two commands a fresh machine needs (both run scripts/setup.sh first, which is a no-op
# when everything is installed already):
#   make demo    start a three-node cluster on the namespace test bed   (make demo-down: remove it)
#   make test    lint, type-check, unit and integration tests (what .ci/run calls)
# Run as root: the test bed creates network namespaces.
PY := .venv/bin/python
# Tests run two at a time (pytest-xdist), each integration test on a bed of its own: most of a
# test's time is spent waiting (leases, state transfers, time-outs), so two fit on 2 cores.
# PYTEST_WORKERS=0 runs them one by one, in one process.
PYTEST_WORKERS ?= 2

.PHONY: setup test lint unit integration chaos demo demo-scale demo-down demo-status bench \
	bench-storage

setup:
	bash scripts/setup.sh

lint: setup
	.venv/bin/ruff check autopilot_mysql tests bench
	.venv/bin/mypy

test: setup
	$(MAKE) --no-print-directory lint
	.venv/bin/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist worksteal --durations=30 tests

unit: setup
	.venv/bin/pytest -p no:cacheprovider tests/unit

integration: setup
	.venv/bin/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist worksteal tests/integration

# The randomized nemesis with many faults (CI runs a short one on each topology): CHAOS_SEED=N
# replays a run, CHAOS_TOPOLOGY=replication|galera runs one topology.
chaos: setup
	CHAOS_FAULTS=$${CHAOS_FAULTS:-120} .venv/bin/pytest -p no:cacheprovider -s tests/integration/test_nemesis.py

demo: setup
	$(PY) -m tests.testbed.demo up

# Grow or shrink the demo to N database nodes, as `docker compose up -d --scale mysql=N`
demo-scale: setup
	$(PY) -m tests.testbed.demo scale $(N)

demo-status: setup
	$(PY) -m tests.testbed.demo status

demo-down: setup
	$(PY) -m tests.testbed.demo down

bench: setup
	$(PY) bench/supervisor.py
	$(PY) bench/failover.py
	$(PY) bench/galera.py

# Snapshot and point-in-time-recovery throughput (a GiB of data and minutes of writes each)
bench-storage: setup
	$(PY) bench/snapshot.py
	$(PY) bench/pitr.py
