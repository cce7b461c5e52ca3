# A2O developer targets. `make install` then `make test` is all a fresh machine needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test test-all lint demo bench clean

install: ## create .venv and install A2O with its test extras (CPU torch)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'

test: ## default test tier (CPU, offline, tiny models)
	$(PY) -m pytest -q

test-all: ## every tier except gpu
	$(PY) -m pytest -q -m 'not gpu'

lint:
	$(PY) -m ruff check a2o searchers cluster benchmarks tests

demo: ## the demo search end to end (A2O-Synth, tiny V-JEPA2, embedded LLM)
	$(PY) -m cluster.job --config cluster/configs/demo.yaml

bench:
	$(PY) -m benchmarks.detection
	$(PY) -m benchmarks.maps_matter
	$(PY) -m benchmarks.trial_overhead

clean:
	rm -rf runs .pytest_cache
