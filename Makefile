# The two commands a newcomer types: `make demo` and `make test`; `make curve` for the label-efficiency curve.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: venv install test demo demo-long curve bench gpu-check soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first and on its own: resolving a bare `torch` would pull a multi-GB CUDA build.
venv: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"

install: venv
	$(PY) -m pip install -q -e ".[test]"

test: install
	$(PY) -m pytest -q -n auto --dist loadfile  # one worker per core, each test file on one worker

# DEMO=hippocampus or cxr14 runs one sample; SEEDS=3 compares MAE with scratch over 3 fine-tuning seeds.
SEEDS ?= 1
demo: install
	$(PY) -m selfmedmae.experiments.demo $(DEMO) --seeds $(SEEDS)

# The longer CPU recipe on the hippocampus sample: 3x the pre-training, 5x the fine-tuning steps (under an hour).
demo-long: install
	$(PY) -m selfmedmae.experiments.demo hippocampus-long --seeds $(SEEDS)

# MAE vs scratch at 10/25/50/100 % of the labelled hippocampus training cases, 3 seeds each; resumable.
# Reuses the demo's pre-training (runs/hippocampus/pretrain) when it is finished with the same settings.
CURVE_FRACTIONS ?= 0.1,0.25,0.5,1.0
CURVE_SEEDS     ?= 3
curve: install
	$(PY) -m selfmedmae curve configs/hippocampus/finetune.yaml --pretrain configs/hippocampus/pretrain.yaml --budget steps \
		--scratch-config configs/hippocampus/finetune_scratch.yaml \
		--fractions $(CURVE_FRACTIONS) --seeds $(CURVE_SEEDS) --out runs/hippocampus/curve

# The performance benchmark (about 7-8 min on 2 CPU cores): prints its tables and appends them, with the
# machine, torch version, commit and date, to benchmarks/RESULTS.md. BENCH="--quick" for a smoke run.
bench: install
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run.py $(BENCH)

# One prepared check on a CUDA machine (about 8 min; results and logs in $(OUT), default gpu_check_out/);
# the wheels it installs come from `bash benchmarks/gpu_wheels.sh`. GPU_CHECK="--dry-run" runs it on the CPU.
OUT ?= gpu_check_out
gpu-check:
	OUT=$(OUT) bash benchmarks/gpu_check.sh $(GPU_CHECK)

# kill -9 small runs at random moments, resume each time, compare with an uninterrupted run (minutes)
soak: install
	OMP_NUM_THREADS=1 $(PY) benchmarks/soak.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
