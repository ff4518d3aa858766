# The two commands a newcomer types: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: venv install test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and on its own: resolving a bare `torch` would pull a multi-GB CUDA build.
venv: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"

install: venv
	$(PY) -m pip install -q -e ".[test]"

test: install
	$(PY) -m pytest -q

demo: install
	$(PY) -m selfmedmae.demo $(DEMO)

# The performance benchmark (about 10-15 min on 2 CPU cores): prints its tables and appends them, with the
# machine, torch version, commit and date, to benchmarks/RESULTS.md. BENCH="--quick" for a smoke run.
bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run.py $(BENCH)

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
