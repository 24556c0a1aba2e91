# Two commands for a newcomer: `make train` and `make test`. Both create .venv from the pins on
# first use; later runs reuse it (the stamp file is rebuilt only when the pins change).
PYTHON ?= python3.11
# pipefail: a failed pip install fails the recipe even though its output is filtered.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV := .venv
STAMP := $(VENV)/.installed
PY := $(VENV)/bin/python

.PHONY: train test bench ui venv clean-venv help

help:
	@echo "make train   set up .venv and train on the bundled EComm sample (run folder under runs/)"
	@echo "make test    set up .venv and run the test suite"
	@echo "make bench   set up .venv, run the benchmarks and write bench/RESULTS.md (ARGS=\"--parts scale\": one section; --quick: smoke run)"
	@echo "make ui      the MLflow UI over the project's store on http://127.0.0.1:$(UI_PORT)"

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setting up $(VENV): $$(grep -c '==' requirements.lock) pinned packages, about 3 GB (first use only: 2 to 6 minutes)"
	@# pip's one line per package is the progress; "Requirement already satisfied" lines are left out.
	$(PY) -m pip install --disable-pip-version-check --progress-bar off -r requirements.lock \
		| { grep -v '^Requirement already satisfied' || true; }
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

venv: $(STAMP)

train: $(STAMP)
	$(PY) train.py $(ARGS)

# Two pytest workers (pytest-xdist), each test file on one of them so that a file's shared
# fixtures are built once: 11.5 minutes on 2 cores against 16 in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

# Quality, speed and scale benchmarks into bench/RESULTS.md (bench/README.md; BENCHMARKS.md is
# the hand-kept headline page); ARGS go to bench/make_benchmarks.py, e.g.
# ARGS="--parts quality,speed" or ARGS="--quick".
bench: $(STAMP)
	$(PY) bench/make_benchmarks.py $(ARGS)

# The MLflow UI over the same store train.py writes (mlflow.db, artifacts under mlruns/).
UI_PORT ?= 5000
ui: $(STAMP)
	@echo "open http://127.0.0.1:$(UI_PORT)/#/experiments?workflowType=machine_learning (MLflow's model-training view)"
	$(VENV)/bin/mlflow ui --host 127.0.0.1 --port $(UI_PORT) \
		--backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlruns

clean-venv:
	rm -rf $(VENV)
