# The two commands a newcomer needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install services bench bench-sweep bench-install soak clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

services:
	scripts/ensure-services.sh

run: install
	$(BIN)/telecom-pay demo

# three workers on two cores: most tests wait on sockets, not the CPU
TEST_WORKERS ?= 3
test: install
	eval "$$(scripts/ensure-services.sh)" && $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP) setup.cfg
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench-install: $(BENCH_STAMP)

# a few minutes: the harness ceiling, then sqlite and postgres at full speed,
# 500/s, 1000/s and keyword round trips (BENCH_ARGS="--configs postgres ...")
bench: bench-install
	eval "$$(scripts/ensure-services.sh)" && $(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# longer: payments offered from 100/s to 3000/s (15 s each), keywords at 1000-3000/s
SWEEP_RATES ?= 100,250,500,750,1000,1500,2000,3000
SWEEP_KEYWORD_RATES ?= 1000,2000,3000
bench-sweep: bench-install
	eval "$$(scripts/ensure-services.sh)" && $(BIN)/python -m benchmarks.run --rates $(SWEEP_RATES) \
		--keyword-rates $(SWEEP_KEYWORD_RATES) --max-run-seconds 15 --keyword-seconds 10 --ceiling-seconds 8 \
		--accounts 1000 $(BENCH_ARGS)

# kill -9 the daemon at random moments under load, then check every promise
# (SOAK_ARGS="--kills 20 --duration 300 --seed 7 --config postgres")
soak: install
	eval "$$(scripts/ensure-services.sh)" && $(BIN)/python -m tests.reliability.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
