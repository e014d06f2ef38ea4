# hrlms — every target creates the venv from the pinned files if missing, starts what it needs on
# 127.0.0.1 (throwaway Postgres unless WAREHOUSE_URL is set, scim2-server, a Ralph LRS for the demo,
# a project-local Airflow DB)
# and stops it afterwards.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hrlms-installed
export PYTHONPATH := $(CURDIR)/plugins
WORKERS ?= 10000
SEED ?= 42
PYTEST_ARGS ?=
# pytest-xdist workers for make test (each gets services of its own: tests/conftest.py); 0 = one process
TEST_WORKERS ?= 2
BENCH ?= ingest,transform,parse,provisioning,churn,xapi
BENCH_SIZES ?= 10000,100000,1000000
BENCH_REPEATS ?= 3
BENCH_ARGS ?=
DBT_DOCS_PORT ?= 8081

.PHONY: help venv demo test bench airflow-ui dbt-docs lint clean compose-tools redis-tools

help:
	@echo "make demo        generate $(WORKERS) synthetic workers, run day 1, day 2 and day 2 again, print a summary"
	@echo "make test        make lint, then the test suite (starts and stops its own services)"
	@echo "make bench       benchmarks (BENCH=$(BENCH) BENCH_SIZES=$(BENCH_SIZES) BENCH_REPEATS=$(BENCH_REPEATS)) -> docs/benchmarks.md"
	@echo "make airflow-ui  local Airflow UI on 127.0.0.1 with the same services (CELERY=1: CeleryExecutor, Redis, 2 workers)"
	@echo "make dbt-docs    generate the dbt docs (lineage of every model and exposure) and serve them on 127.0.0.1:$(DBT_DOCS_PORT)"
	@echo "make lint        ruff (ruff.toml) and sqlfluff (dbt_project/.sqlfluff); fix: .venv/bin/ruff check --fix . / .venv/bin/sqlfluff fix dbt_project"
	@echo "make clean       remove .local/ (throwaway databases, reports, Airflow home)"

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "hrlms needs Python 3.11 (set PYTHON=...)"'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=24'
	$(BIN)/python -m pip install -q -r requirements.txt -c constraints.txt
	@touch $@

# docker-compose (Debian's 1.29) only validates docker-compose.yaml offline in the tests.
compose-tools:
	@command -v docker-compose >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null) \
	      || echo "warning: could not install docker-compose; the compose test will be skipped"; \
	  else echo "warning: docker-compose not found; the compose test will be skipped"; fi; }

# redis-server (Debian) is the Celery broker of the local CeleryExecutor stack (tests/celery, make airflow-ui CELERY=1).
redis-tools:
	@command -v redis-server >/dev/null || test -x /usr/bin/redis-server || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 \
	     || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null)) \
	      || echo "warning: could not install redis-server; the CeleryExecutor tests will be skipped"; \
	  else echo "warning: redis-server not found; the CeleryExecutor tests will be skipped"; fi; }

demo: venv
	$(BIN)/python -m hrlms.devenv run --airflow-db --lrs -- $(BIN)/python -m hrlms.demo --workers $(WORKERS) --seed $(SEED)

test: venv compose-tools redis-tools lint
	$(BIN)/python -m hrlms.devenv run --airflow-db -- $(BIN)/python -m pytest -q -p no:cacheprovider \
	  -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS); \
	  rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests were collected (exit 5)"; exit 0; fi; exit $$rc

# Each benchmark in its own throwaway services; results in .local/bench/<name>.json, then docs/benchmarks.md.
# Benchmarks whose bench/bench_<name>.py does not exist (yet) are skipped. BENCH_ARGS=--merge keeps the
# other sizes of an earlier run (e.g. add 1M with BENCH_REPEATS=1 to a 10k/100k run).
bench: venv
	@rc=0; for b in $$(echo "$(BENCH)" | tr ',' ' '); do \
	  if [ ! -f bench/bench_$$b.py ]; then echo "bench: skipping $$b (no bench/bench_$$b.py)"; continue; fi; \
	  $(BIN)/python -m hrlms.devenv run --airflow-db -- \
	    $(BIN)/python -m bench.bench_$$b --sizes $(BENCH_SIZES) --repeats $(BENCH_REPEATS) $(BENCH_ARGS) || rc=1; \
	done; $(BIN)/python bench/report.py || rc=1; exit $$rc

# CELERY=1: the CeleryExecutor (Redis broker, metadata DB on Postgres, CELERY_WORKERS worker processes).
CELERY ?=
CELERY_WORKERS ?= 2
airflow-ui: venv $(if $(CELERY),redis-tools)
	$(BIN)/python -m hrlms.devenv airflow-ui $(if $(CELERY),--celery-workers $(CELERY_WORKERS))

# ruff.toml and dbt_project/.sqlfluff (+ .sqlfluffignore) hold the rules and why. Auto-fix what can be fixed:
#   .venv/bin/ruff check --fix .            (import order, blank lines, unused imports)
#   .venv/bin/sqlfluff fix -p 0 dbt_project  (review the diff: it rewrites SQL)
# sqlfluff only warns (exit 0) when it cannot slice a template, and then lints nothing of that file: fail then.
lint: venv
	$(BIN)/ruff check .
	@err=$$(mktemp); PYTHONWARNINGS=ignore::UserWarning:multiprocessing.resource_tracker $(BIN)/sqlfluff lint --processes 0 dbt_project 2>$$err; rc=$$?; cat $$err >&2; \
	  if grep -q "templated file mismatch" $$err; then echo "sqlfluff: a file above could not be templated, so it was not linted" >&2; rc=1; fi; \
	  rm -f $$err; exit $$rc

# Generated inside a throwaway warehouse (built empty unless WAREHOUSE_URL has the models), served without it.
dbt-docs: venv
	$(BIN)/python -m hrlms.devenv run -- $(BIN)/python -m hrlms.transform.docs --target-path .local/dbt-docs
	$(BIN)/python -m hrlms.transform.docs --target-path .local/dbt-docs --serve $(DBT_DOCS_PORT)

clean:
	rm -rf .local dbt_project/target dbt_project/logs expectations/gx/uncommitted
