# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates or refreshes the virtual environment in .venv/ from the pinned requirements
# (skipped when they have not changed since the last install), then does its job.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := $(shell grep -E '^torch==' requirements.txt)
# Where torch comes from. Empty: the default index (on this project's CI machines a CPU build of the
# pinned version is already on disk). On a machine where the default wheel pulls CUDA libraries,
# `make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` takes the CPU-only build.
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint format bench airflow clean help

help:
	@echo "make demo       generate sample data, load it into PostgreSQL, build features, print a summary"
	@echo "make test       lint, then the whole test suite (slow tests included)"
	@echo "make test-fast  lint, then the tests not marked slow"
	@echo "make lint       ruff and sqlfluff"
	@echo "make bench      the load, feature and generator benchmarks (minutes; large data)"
	@echo "make airflow    the Airflow UI (airflow standalone) with this project's DAGs and plugins"
	@echo "make clean      remove the virtual environment and caches"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch alone first: the CPU build of the pinned version, so pip never reaches for a CUDA one
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX_URL),--index-url "$(TORCH_INDEX_URL)") "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m recsys demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/sqlfluff lint sql

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/sqlfluff fix sql

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/bench_generate.py
	$(PY) bench/bench_load.py
	$(PY) bench/bench_features.py

# airflow standalone with AIRFLOW_HOME=.airflow, dags/ and plugins/, parallelism 2; Ctrl-C stops all of it
airflow: $(STAMP)
	$(PY) -m recsys.orchestration.airflow_local --standalone --home .airflow

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
