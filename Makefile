# A2O developer targets. `make install` then `make test` is all a fresh machine needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-llm reinstall-llm test test-all lint demo bench clean

install: ## create .venv and install A2O with its test extras (CPU torch)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'

# Portable x86 kernels for llama.cpp. A native build (GGML_NATIVE, the default) compiled AMX
# kernels on a VM that lists AMX in /proc/cpuinfo without enabling it: the server died with SIGILL
# on its first completion. Rebuild an existing install with `make reinstall-llm`.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
endif

install-llm: install ## the embedded local LLM (builds llama.cpp from source once: ~8 min on 2 cores)
	$(PY) -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -e '.[local-llm]'

reinstall-llm: install ## rebuild llama-cpp-python with the portable kernels above
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install --no-cache-dir --force-reinstall --no-deps "llama-cpp-python[server]"

test: ## default test tier (CPU, offline, tiny models)
	$(PY) -m pytest -q

test-all: ## every tier except gpu
	$(PY) -m pytest -q -m 'not gpu'

lint:
	$(PY) -m ruff check a2o searchers cluster benchmarks tests

demo: install-llm ## the demo search end to end (A2O-Synth, tiny V-JEPA2, embedded LLM)
	$(VENV)/bin/a2o search --config cluster/configs/demo.yaml
	$(VENV)/bin/a2o report runs/demo

bench:
	$(PY) -m benchmarks.detection
	$(PY) -m benchmarks.maps_matter
	$(PY) -m benchmarks.trial_overhead

clean:
	rm -rf runs .pytest_cache
