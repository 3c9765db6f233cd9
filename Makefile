# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HYPERVER_DATA ?= ../shared/data
export HYPERVER_DATA

.PHONY: setup demo test clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

# The main job. For now: the dlib teacher on LFW View 2 (all 10 folds, it saw no LFW image,
# and the test folds 6-10), written to results/teacher_dlib_lfw.json.
demo: setup
	$(BIN)/hyperver eval --model dlib --protocol lfw --folds 1-10 6-10 --out results/teacher_dlib_lfw.json

test: setup
	$(BIN)/python -m pytest -q

clean-cache:
	rm -rf cache
