# Two commands on a fresh machine: `make demo` and `make test`. Every target that needs the virtual
# environment builds it first; it is rebuilt only when pyproject.toml changes.
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNS ?= runs
PHASE ?= demo
SEED ?= 1
ARGS :=
ifdef VARIANT
ARGS += --variant $(VARIANT)
endif
ifdef STEPS
ARGS += --steps $(STEPS)
endif

.PHONY: install test test-slow phase demo describe validate list bench clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,analysis]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

phase: $(STAMP)
	$(PY) -m experiments.launch run $(PHASE) --seeds $(SEED) --runs-root $(RUNS) $(ARGS)

describe: $(STAMP)
	$(PY) -m experiments.launch describe $(PHASE) $(ARGS)

list: $(STAMP)
	$(PY) -m experiments.launch list

validate: $(STAMP)
	$(PY) -m experiments.launch validate --all

bench: $(STAMP)
	$(PY) -m experiments.bench --size 1 --seeds 1 2 --num-samples 128 --envs 1 4 --out bench.jsonl

# The demo: train the demo phase (2 seeds vmapped), then its seed statistics, curves and a K-labelled video.
demo: $(STAMP)
	$(PY) -m experiments.launch run demo --seeds 1-2 --runs-root $(RUNS)
	@if [ -f analysis/seed_stats.py ]; then $(PY) analysis/seed_stats.py --runs $(RUNS); fi
	@if [ -f analysis/curves.py ]; then $(PY) analysis/curves.py --runs $(RUNS) --phases demo --out $(RUNS)/demo/curves.png; fi
	@if [ -f videos/render.py ]; then $(PY) videos/render.py --run $(RUNS)/demo/default/seed1 --out $(RUNS)/demo/default/seed1/videos; fi
