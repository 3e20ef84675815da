# The two commands a newcomer needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install services bench soak clean

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

test: install
	eval "$$(scripts/ensure-services.sh)" && $(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: install
	eval "$$(scripts/ensure-services.sh)" && $(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# kill -9 the daemon at random moments under load, then check every promise
# (SOAK_ARGS="--kills 20 --duration 300 --seed 7 --config postgres")
soak: install
	eval "$$(scripts/ensure-services.sh)" && $(BIN)/python -m tests.reliability.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
