# Two commands do everything on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch 2.13.0 lies on the project's machines; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup train test test-fast bench clean

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

clean:
	rm -rf $(VENV) runs build *.egg-info
