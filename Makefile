# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13.0 lies on the project's machines; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup train test test-fast bench mutants clean

$(BIN)/activate: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(BIN)/activate

setup: $(BIN)/activate

train: setup
	$(BIN)/brims-rl train

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

bench: setup
	$(BIN)/python benchmarks/core_speed.py
	$(BIN)/python benchmarks/env_speed.py
	$(BIN)/python benchmarks/train_speed.py --repeats 2

# Mutation testing ([tool.mutmut] in pyproject.toml): every surviving mutant is either a gap in
# the tests or an equivalent mutant listed in the README's Tests section. Not part of CI (slow).
# MUTANTS narrows the run to some mutant names, e.g. MUTANTS='brims_rl.layer.*'.
MUTANTS ?=
MUTMUT_JOBS ?= 2
mutants: setup
	$(BIN)/python -m pip install --quiet -e ".[dev,mutation]"
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTMUT_JOBS) $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) runs build *.egg-info mutants
