# `make test` and `make demo` create/reuse .venv and install everything they need.
# The CPU path pins torch==2.13.0 (a bare `torch` would pull several GB of CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.goldfish-installed

.PHONY: test demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/goldfish demo

bench: $(STAMP)
	$(PY) benchmarks/bench_mask.py
	$(PY) benchmarks/bench_train.py
	$(PY) benchmarks/bench_audit.py
	$(PY) benchmarks/bench_data.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
