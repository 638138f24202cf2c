# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create ./.venv when it is missing. torch is installed first, pinned to the CPU build
# (an unpinned torch pulls a multi-GB CUDA build); pyproject.toml keeps a range, so a user
# with a GPU installs their own CUDA torch into the venv first, or sets TORCH_SPEC.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
DEMO_DIR ?= demo

.PHONY: venv demo test lint bench clean-demo

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,distributed,experiments]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh $(DEMO_DIR)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --exclude '*.md' .  # docs keep their aligned comments
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python -m benchmarks.run

clean-demo:
	rm -rf $(DEMO_DIR)
