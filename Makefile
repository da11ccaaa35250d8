# DanceLCM — every target creates the virtual environment it needs first.
# `make help` lists the targets.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines: the torch pin makes pip take the local CPU wheel instead of a multi-GB CUDA build.
# On a GPU machine that already has torch in the venv, use `make install TORCH_SPEC=torch`.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)-$(EXTRAS)
PYTEST_ARGS ?=
# extra options of the demo, e.g. DEMO_ARGS="distill_steps=2000 max_clips=80" on a GPU machine
DEMO_ARGS ?=
# extra overrides for both teacher stages, e.g. on a GPU: TEACHER_ARGS="trainer=gpu trainer.precision=32-true data.num_workers=6"
TEACHER_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-slow lint format demo data teacher bench bench-data clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) ## create .venv and install the package with the dev tools (about a minute)

test: $(STAMP) ## run the fast test suite (CPU only)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP) ## run every test, the slow ones included
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

data: $(STAMP) ## generate the synthetic dancer dataset in data/synthetic (if missing)
	@test -f data/synthetic/dataset.json || $(PY) -m dancelcm.data.synthesize out_dir=data/synthetic

demo: $(STAMP) ## the main job: synthetic dancers -> shipped teacher -> DanceLCM K=4 + VideoLCM baseline -> table + video (~40 min on 2 CPU cores)
	$(PY) -m dancelcm.demo $(DEMO_ARGS)

teacher: $(STAMP) ## the embedded-default teacher from scratch (hours on a CPU): 2 stages -> checkpoints/synthetic_teacher
	$(PY) -m dancelcm.train +experiment=synthetic_teacher ckpt_path=auto $(TEACHER_ARGS)
	$(PY) -m dancelcm.train +experiment=synthetic_teacher_refine ckpt_path=auto $(TEACHER_ARGS)
	test -f runs/synthetic_teacher_refine/export/bundle.json  # never replace the shipped bundle with nothing
	# float16 copy (half the size; what ships in git), written beside the shipped bundle, then swapped in
	$(PY) -m dancelcm.tools.half src=runs/synthetic_teacher_refine/export dst=checkpoints/synthetic_teacher.new
	rm -rf checkpoints/synthetic_teacher && mv checkpoints/synthetic_teacher.new checkpoints/synthetic_teacher

bench: $(STAMP) ## speed ratios side by side: teacher vs student inference, distill vs plain step, loader vs need
	$(PY) -m dancelcm.tools.bench $(BENCH_ARGS)

bench-data: $(STAMP) ## loader throughput: clips/s at 16 x 256 x 256 with 0 and 2 workers
	$(PY) -m dancelcm.data.benchmark

clean: ## remove caches (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
