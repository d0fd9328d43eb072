# Quick start: `make run` (the app on http://localhost:8501) and `make test` (ruff, import contracts, pytest).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8501
# The data set for tests and tools; $FRACATLAS_DIR wins when set.
export FRACATLAS_DIR ?= $(firstword $(wildcard $(CURDIR)/fracture/FracAtlas $(CURDIR)/../shared/data/FracAtlas))
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.run-installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt $(VENV)/.run-installed
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.run-installed
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.headless true

test: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/python tools/check_imports.py
	$(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/python tools/check_imports.py

clean-venv:
	rm -rf $(VENV)
