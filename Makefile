# The two commands of the README are `make dev` and `make test`; the rest serve them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install prereqs promtool dev test test-faults unit lint bench down clean

install: $(STAMP)

# Reinstall when the dependencies change; the package itself is editable.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

prereqs:
	@bash deployments/local/prereqs.sh

# promtool for the alert-rule tests, built once from its Go module into ~/.cache/ys-platform
# (the first build takes ~5 min on 2 cores; later runs find the binary).
promtool:
	@bash deployments/prometheus/promtool.sh --build >/dev/null

# The Dagster UI's port: `make dev PORT=3300`.
PORT ?= 3000

# `make dev SECURE=1`: the secure stack (SASL_SSL, SCRAM-SHA-512, ACLs; credentials in
# $(YS_HOME)/secrets/). A state folder keeps the mode of its first start.
SECURE ?=

## dev: local Kafka, Connect and PostgreSQL, topics and CDC applied, simulator, then Dagster (`dg dev`) on http://127.0.0.1:$(PORT)
dev: install prereqs
	$(BIN)/ys-platform dev --port $(PORT)$(if $(SECURE), --secure)

## test: install, start the services the tests need, run the whole suite
test: install prereqs promtool
	$(BIN)/ys-platform local up
	# The slowest tests listed at the end: CI's run must stay under 30 minutes.
	$(BIN)/pytest --durations=25

## test-faults: the broker fault scenario under load on a 3-broker cluster (prints its table)
test-faults: install prereqs
	$(BIN)/ys-platform local up
	$(BIN)/pytest -m faults -s tests/integration/test_broker_faults.py \
		tests/integration/test_cdc_faults.py tests/integration/test_clickhouse_sink_store_outage.py

unit: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install prereqs
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/ys-platform local up
	@for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

down:
	-$(BIN)/ys-platform local down

clean: down
	rm -rf .ys
