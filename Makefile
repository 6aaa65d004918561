# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates or refreshes the virtual environment in .venv/ from the pinned requirements
# (skipped when they have not changed since the last install), then does its job.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIN := $(shell grep -E '^torch==' requirements.txt)
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
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
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

# airflow standalone in the background of its own process group (set -m), so Ctrl-C here is
# forwarded to it as SIGINT, which stops its scheduler and workers too (SIGTERM would not).
AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/.airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__PARALLELISM=2 AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=2 \
	AIRFLOW__SCHEDULER__PARSING_PROCESSES=1 AIRFLOW__API__WORKERS=1 OMP_NUM_THREADS=1
airflow: $(STAMP)
	@echo "Airflow UI: http://localhost:8080 (user admin; password in .airflow/simple_auth_manager_passwords.json.generated)"
	@echo "Campaign database: RECSYS_DATABASE_URL or the embedded server; Ctrl-C stops everything."
	@bash -c 'set -m; PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(AIRFLOW_ENV) airflow standalone & pid=$$!; \
		trap "kill -INT -- -$$pid 2>/dev/null" INT TERM; wait $$pid; wait $$pid 2>/dev/null; true'

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
