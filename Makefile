# On a fresh machine `make demo` and `make test` are the only commands a newcomer types: every target that
# needs the virtual environment builds it first, and rebuilds it only when pyproject.toml changes.
#
#   make phase PHASE=z SEED=1-5 [VARIANT=v] [STEPS=n] [RUNS=dir]    train (SEED defaults to the phase's seeds)
#   make sweep PHASE=aa SEED=1-3 [BACKEND=local|ray] [ADDRESS=host:6379|auto] [GPUS=g] [SEEDS_PER_TASK=n] [VARIANT=v] [STEPS=n] [RUNS=dir]
#                                                                   every (variant, seed group) as a job, then a summary
#   make describe PHASE=z [VARIANT=v]                               resolved config, parameter counts, run dirs
#   make validate | make list | make bench | make test-slow
#   make video RUN=runs/<phase>/<variant>/seed<k> [CHECKPOINT=latest|best|<env_step>] [POLICY=mppi|pi]
#              [EPISODES=n] [VIDEO_SEED=s] [MAX_STEPS=n] [OUT=dir] [GRID="run run ..."]   K-labelled rollout video
#   make dashboard [RUNS=dir] [PORT=5055] [HOST=127.0.0.1]          live dashboard of a runs root (analysis/dashboard.py)
#
# Every target calls the `tdmpc-glass` console command (pyproject.toml [project.scripts]; experiments/cli.py).

PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CLI := $(VENV)/bin/tdmpc-glass

# Optional arguments become launcher flags only when given, so $TDMPC_GLASS_RUNS keeps working without RUNS=.
PHASE_FLAGS := $(if $(SEED),--seeds $(SEED)) $(if $(VARIANT),--variant $(VARIANT)) $(if $(STEPS),--steps $(STEPS))
RUNS_FLAG := $(if $(RUNS),--runs-root $(RUNS))
# where the demo's runs land, for the analysis steps after it
DEMO_RUNS := $(or $(RUNS),$(TDMPC_GLASS_RUNS),runs)
DEMO_PHASE := demo_glass

.PHONY: install test test-slow phase sweep describe validate list bench demo demo-train demo-analysis video dashboard

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,analysis,dashboard]'
	touch $(STAMP)

# test files spread over the cores; one file stays on one worker, so module and session fixtures are built once
PYTEST := $(PY) -m pytest -n auto --dist loadfile

test: $(STAMP)
	$(PYTEST)

# pytest exits 5 when no test is marked slow; make would turn that into its own exit 2, so it is handled here
test-slow: $(STAMP)
	@echo "$(PYTEST) -m slow"; code=0; $(PYTEST) -m slow || code=$$?; \
	if [ $$code -eq 5 ]; then echo "(no slow tests collected)"; exit 0; fi; exit $$code

phase: $(STAMP)
	@test -n "$(PHASE)" || { echo "usage: make phase PHASE=<name> SEED=<k or a-b> [VARIANT=v] [STEPS=n] [RUNS=dir]" >&2; exit 2; }
	$(CLI) run $(PHASE) $(PHASE_FLAGS) $(RUNS_FLAG)

# BACKEND=ray starts Ray on this machine unless ADDRESS= names a cluster (README "Sweeps on Ray")
sweep: $(STAMP)
	@test -n "$(PHASE)" || { echo "usage: make sweep PHASE=<name> SEED=<k or a-b> [BACKEND=local|ray] [ADDRESS=host:6379|auto] [GPUS=g] [VARIANT=v] [STEPS=n] [RUNS=dir]" >&2; exit 2; }
	$(CLI) sweep $(PHASE) $(PHASE_FLAGS) $(RUNS_FLAG) --backend $(or $(BACKEND),local) $(if $(ADDRESS),--address $(ADDRESS)) $(if $(GPUS),--num-gpus $(GPUS)) $(if $(SEEDS_PER_TASK),--seeds-per-task $(SEEDS_PER_TASK))

describe: $(STAMP)
	@test -n "$(PHASE)" || { echo "usage: make describe PHASE=<name> [VARIANT=v] [STEPS=n]" >&2; exit 2; }
	$(CLI) describe $(PHASE) $(PHASE_FLAGS) $(RUNS_FLAG)

validate: $(STAMP)
	$(CLI) validate --all

list: $(STAMP)
	$(CLI) list

# the live dashboard (analysis/dashboard.py); $(STAMP) installs the dashboard extra
dashboard: $(STAMP)
	$(CLI) dashboard $(if $(RUNS),--runs $(RUNS)) --port $(or $(PORT),5055) $(if $(HOST),--host $(HOST))

# K-labelled rollout video, CSV, K timeline and summary of a checkpoint (videos/render.py; README "Videos");
# GRID="run run ..." tiles several runs side by side (with RUN, it comes first)
VIDEO_FLAGS := $(if $(CHECKPOINT),--checkpoint $(CHECKPOINT)) $(if $(POLICY),--policy $(POLICY)) \
	$(if $(EPISODES),--episodes $(EPISODES)) $(if $(VIDEO_SEED),--seed $(VIDEO_SEED)) \
	$(if $(MAX_STEPS),--max-steps $(MAX_STEPS)) $(if $(OUT),--out $(OUT))
video: $(STAMP)
	@test -n "$(RUN)$(GRID)" || { echo "usage: make video RUN=runs/<phase>/<variant>/seed<k> [CHECKPOINT=latest|best|<env_step>] [POLICY=mppi|pi] [EPISODES=n] [VIDEO_SEED=s] [MAX_STEPS=n] [OUT=dir] [GRID=\"run ...\"]" >&2; exit 2; }
	$(CLI) video $(if $(RUN),--run $(RUN)) $(if $(GRID),--grid $(GRID)) $(VIDEO_FLAGS)

bench: $(STAMP)
	$(CLI) bench --size 1 --seeds 1 2 --num-samples 128 --envs 1 4 --out bench.jsonl

# The demo: train phases/demo_glass.yaml (the tiny TD-MPC2 with Glass on, so the video can label clusters; 2 seeds
# vmapped in one process; re-running resumes), then its seed statistics, learning curves and a K-labelled video.
demo: demo-train demo-analysis

demo-train: $(STAMP)
	$(CLI) run $(DEMO_PHASE) --seeds 1-2 $(RUNS_FLAG)

demo-analysis: demo-train
	$(CLI) stats --runs $(DEMO_RUNS)
	$(CLI) curves --runs $(DEMO_RUNS) --phases $(DEMO_PHASE) --out $(DEMO_RUNS)/$(DEMO_PHASE)/curves.png
	$(CLI) video --run $(DEMO_RUNS)/$(DEMO_PHASE)/default/seed1
