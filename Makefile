# Quick start: `make run` (the app on http://localhost:8501), `make test` (ruff, import contracts, pytest)
# and `make test-fast` (the same without the slow and browser tests, for the edit loop).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The interpreter that will run things: the venv's once it exists, else $(PYTHON).
RUN_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
PORT ?= 8501
# The data set for tests and tools; $FRACATLAS_DIR wins when set.
export FRACATLAS_DIR ?= $(firstword $(wildcard $(CURDIR)/fracture/FracAtlas $(CURDIR)/../shared/data/FracAtlas))
export BONEFRACTURE_YOLO8_DIR ?= $(firstword $(wildcard $(CURDIR)/fracture/BoneFractureYolo8 $(CURDIR)/../shared/data/BoneFractureYolo8))
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test test-fast lint clean-venv check-python

# Fails at once, in one line, on a Python older than 3.11 (or none), instead of deep in pip.
check-python:
	@$(RUN_PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
	  echo "make: this project needs Python >= 3.11; '$(or $(RUN_PYTHON),python3)' is $$($(RUN_PYTHON) -c 'import platform; print("Python", platform.python_version())' 2>/dev/null || echo 'not found'). Install Python 3.11+ and run 'make clean-venv' then 'make PYTHON=/path/to/python3.11 $(MAKECMDGOALS)'." >&2; \
	  exit 1; }

$(BIN)/python: | check-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt requirements-ray.txt $(VENV)/.run-installed
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# The project itself, editable (its console scripts fracture-predict / -evaluate / -train; the code
# stays where it is). Built with the venv's own setuptools, so no download is needed.
$(VENV)/.project-installed: pyproject.toml $(VENV)/.run-installed
	$(BIN)/python -c 'import setuptools' 2>/dev/null || $(BIN)/pip install -q 'setuptools>=65'
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

# server.py serves app.py and loads both models at server start; no file watcher (it walks .venv and
# floods the log); TensorFlow's start-up lines are filtered by the app.
run: check-python $(VENV)/.run-installed $(VENV)/.project-installed
	$(BIN)/streamlit run server.py --server.port $(PORT) --server.headless true --server.fileWatcherType none

test: check-python $(VENV)/.dev-installed $(VENV)/.project-installed
	$(BIN)/ruff check .
	$(BIN)/python tools/check_imports.py
	$(BIN)/python -m pytest

# Under a minute on a 2-core laptop: no browser, no training, no full evaluation, no server,
# Hypothesis at its small CI size only (the `slow` marker in pyproject.toml).
test-fast: check-python $(VENV)/.dev-installed $(VENV)/.project-installed
	$(BIN)/ruff check .
	$(BIN)/python tools/check_imports.py
	$(BIN)/python -m pytest -q -m "not slow and not browser"

lint: check-python $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/python tools/check_imports.py

clean-venv:
	rm -rf $(VENV)
