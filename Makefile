# A2O developer targets. `make install` then `make test` is all a fresh machine needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install install-llm reinstall-llm test test-all lint demo bench clean gpu-check

install: $(VENV)/.a2o-installed ## create .venv and install A2O with its test extras (CPU torch)

# A stamp, so `make demo` does not rerun pip each time; editing pyproject.toml reinstalls.
$(VENV)/.a2o-installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'
	touch $@

# Portable x86 kernels for llama.cpp. A native build (GGML_NATIVE, the default) compiled AMX
# kernels on a VM that lists AMX in /proc/cpuinfo without enabling it: the server died with SIGILL
# on its first completion. Rebuild an existing install with `make reinstall-llm`.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
endif

install-llm: install ## the embedded local LLM (builds llama.cpp from source once: ~8 min on 2 cores)
	@$(PY) -c "import llama_cpp" 2>/dev/null || { \
	  echo "building llama-cpp-python from source for the embedded LLM: about 8 minutes on 2 idle cores, once"; \
	  echo "(the full build log goes to $(VENV)/llama-build.log; a line a minute shows it is alive)"; \
	  ( while sleep 60; do echo "  ... still building llama.cpp $$(grep -o '\[[0-9]*/[0-9]*\]' $(VENV)/llama-build.log 2>/dev/null | tail -n 1)"; done ) & beat=$$!; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -v -e '.[local-llm]' > $(VENV)/llama-build.log 2>&1; rc=$$?; \
	  kill $$beat 2>/dev/null; \
	  if [ $$rc -eq 0 ]; then echo "llama-cpp-python built"; \
	  else echo "llama-cpp-python build failed (exit $$rc); last lines of $(VENV)/llama-build.log:"; tail -n 30 $(VENV)/llama-build.log; exit $$rc; fi; }

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

# The GPU check of a lent GPU machine: its own python3 (torch with CUDA, transformers), no venv,
# no install, no Ray or PyAV needed. Tests (junit xml + log) and the smoke table go to $OUT when
# set, else runs/gpu-check; both always run, and the target fails when either does. Without CUDA
# every test skips and the smoke table has the CPU rows only. PYTHON: python3 when it has torch (the
# lent machine), else this checkout's venv (a CPU dev machine); override with PYTHON=...
PYTHON ?= $(shell python3 -c 'import torch' >/dev/null 2>&1 && echo python3 || { test -x $(PY) && echo $(PY) || echo python3; })
GPU_CHECK_OUT ?= $(if $(OUT),$(OUT),runs/gpu-check)

gpu-check: ## GPU tier (tests/test_gpu.py) + benchmarks.gpu_smoke, ~5 min on one GPU
	@mkdir -p "$(GPU_CHECK_OUT)"
	@{ PYTHONPATH=. $(PYTHON) -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider \
	    --junitxml="$(GPU_CHECK_OUT)/gpu-tests.xml"; echo $$? > "$(GPU_CHECK_OUT)/.tests-rc"; } 2>&1 \
	  | tee "$(GPU_CHECK_OUT)/gpu-tests.log"; \
	tests=$$(cat "$(GPU_CHECK_OUT)/.tests-rc"); rm -f "$(GPU_CHECK_OUT)/.tests-rc"; \
	{ PYTHONPATH=. $(PYTHON) -m benchmarks.gpu_smoke --out "$(GPU_CHECK_OUT)"; \
	  echo $$? > "$(GPU_CHECK_OUT)/.smoke-rc"; } 2>&1 | tee "$(GPU_CHECK_OUT)/gpu-smoke.log"; \
	smoke=$$(cat "$(GPU_CHECK_OUT)/.smoke-rc"); rm -f "$(GPU_CHECK_OUT)/.smoke-rc"; \
	echo "gpu-check: tests exit $$tests, smoke exit $$smoke (outputs in $(GPU_CHECK_OUT))"; \
	[ "$$tests" = 0 ] && [ "$$smoke" = 0 ]

bench:
	$(PY) -m benchmarks.detection
	$(PY) -m benchmarks.maps_matter
	$(PY) -m benchmarks.trial_overhead

clean:
	rm -rf runs .pytest_cache
