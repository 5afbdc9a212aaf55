# sapt_lightning - `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Use the active virtualenv/conda env if there is one; otherwise a local .venv that
# sees system packages, so an installed CUDA torch is reused and never replaced.
ifdef VIRTUAL_ENV
PYTHON ?= $(VIRTUAL_ENV)/bin/python
else ifdef CONDA_PREFIX
PYTHON ?= $(CONDA_PREFIX)/bin/python
else
PYTHON ?= .venv/bin/python
endif
STAMP := $(dir $(PYTHON)).sapt_installed
PYTEST_ARGS ?=

help: ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@if [ ! -x "$(PYTHON)" ]; then python3 -m venv --system-site-packages .venv; fi
	$(PYTHON) -m pip install -q --upgrade pip
	@# torch first: keep any installed build (CUDA included); else the pinned CPU-friendly wheel.
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "torch==2.13.0"
	$(PYTHON) -m pip install -q -e ".[dev]"
	@touch $@

install: $(STAMP) ## create the environment and install the package (idempotent)

install-deepspeed: $(STAMP) ## add DeepSpeed (GPU strategies)
	$(PYTHON) -m pip install -q -e ".[deepspeed]"

quickstart: $(STAMP) ## the default job on CPU: single-task references, then SAPT on the synthetic stream (ARGS=strategy=single_gpu on a GPU)
	$(PYTHON) -m sapt_lightning method=single logger=csv $(ARGS)
	$(PYTHON) -m sapt_lightning $(ARGS)

test: $(STAMP) ## fast test suite (no slow, no GPU)
	$(PYTHON) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-full: $(STAMP) ## every test, slow end-to-end runs included
	$(PYTHON) -m pytest -m "not gpu" $(PYTEST_ARGS)

test-gpu: $(STAMP) ## the GPU tests (CUDA, bf16-mixed, DeepSpeed ZeRO-2 on one GPU); they skip without a GPU
	$(PYTHON) -m pytest -m gpu $(PYTEST_ARGS)

bench: $(STAMP) ## SAPT-LoRA step time / memory vs a single LoRA, fused vs loop (CPU, mid-size T5)
	$(PYTHON) -m sapt_lightning.bench $(BENCH_ARGS)

bench-stream: $(STAMP) ## whole streams' wall time by phase, SAPT-LoRA and SeqLoRA (quickstart + SuperNI-shaped; CPU)
	$(PYTHON) -m sapt_lightning.bench_stream $(BENCH_ARGS)

bench-gpu: $(STAMP) ## the same on a GPU: T5-Large's shape, bf16-mixed
	$(PYTHON) -m sapt_lightning.bench --device cuda --precision bf16-mixed --shape t5-large $(BENCH_ARGS)

# The paper's tables and figures: the Hydra sweeps of experiments/recipes/<target>.yaml (seeds 1-3),
# then the report, under logs/tables/.
# SMOKE=1: tiny backbone, 2 synthetic tasks, seeds 1-2 (CPU, minutes). SEEDS=1,2,3 OUT=dir UNSEEN='[a,b]'
# ARGS='hydra/launcher=submitit_slurm paths.data_dir=...' passes overrides to every sweep.
TABLE_FLAGS = $(if $(SMOKE),--smoke) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(OUT),--out $(OUT)) $(if $(UNSEEN),--unseen '$(UNSEEN)')
table1 table2 table3 fig4 fig5 fig6: $(STAMP)
	$(PYTHON) -m sapt_lightning.tables $@ $(TABLE_FLAGS) $(ARGS)

table1: ## Table 1: every baseline vs SAPT (SMOKE=1 for a CPU check)
table2: ## Table 2: ablations -ARM, +Replay, -Alignment, -SA
table3: ## Table 3: unseen tasks (UNSEEN='[task,...]'; SMOKE=1 uses synthetic ones)
fig4: ## Figure 4: T5 sizes
fig5: ## Figure 5: T5 vs LLaMA-2
fig6: ## Figure 6: replay volume, real vs pseudo

cpu_tier: $(STAMP) ## the paper's comparisons on real data with the mini backbones, on a CPU (hours; SMOKE=1: minutes)
	$(PYTHON) -m sapt_lightning.tables cpu_tier $(TABLE_FLAGS) $(if $(SMOKE),,--record experiments/results/cpu_tier) $(ARGS)

build-backbones: $(STAMP) ## pretrain and cache mini_t5 and mini_llama ahead of runs (mini_t5: about 35 min on 2 cores)
	$(PYTHON) -m sapt_lightning.build_backbone backbone=mini_t5 $(ARGS)
	$(PYTHON) -m sapt_lightning.build_backbone backbone=mini_llama $(ARGS)

lint: $(STAMP) ## ruff: lint and format check (ruff format . fixes the format)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

clean: ## remove run outputs (keeps the environment and the backbone cache)
	rm -rf logs outputs multirun

.PHONY: help install install-deepspeed quickstart test test-full test-gpu bench bench-stream bench-gpu lint clean table1 table2 table3 fig4 fig5 fig6 cpu_tier build-backbones
