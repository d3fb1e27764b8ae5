# `make test` and `make demo` create/reuse .venv and install everything they need, at the versions
# the suite last passed with (constraints.txt). The CPU path pins torch==2.13.0 (a bare `torch`
# would pull several GB of CUDA wheels).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.goldfish-installed

.PHONY: test demo bench constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
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
	$(PY) benchmarks/bench_megatron_loader.py

# After upgrading packages in $(VENV) and a green `make test`: pin what it now runs with.
constraints: $(STAMP)
	{ grep '^#' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
