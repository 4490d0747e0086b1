# One command each, on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BENCH_VENV ?= .venv-bench
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
XDIST ?=

.PHONY: demo test test-fast bench lint venv clean

PLUGINS := $(wildcard plugins/*/pyproject.toml)

$(STAMP): pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# first-party plugins install beside the package, through their own entry points
	for p in $(dir $(PLUGINS)); do $(BIN)/pip install --quiet -e $$p || exit 1; done
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlops demo mlops-demo

test: $(STAMP)
	# the fleet tests' devices: sshd, iptables, zstd (installed when missing)
	bash packaging/edge/test-host.sh
	$(BIN)/ruff check src tests bench plugins
	$(BIN)/lint-imports
	$(BIN)/mypy
	# the docker tests start an engine if none runs (packaging/docker/engine.sh); stop it after
	# one process; XDIST="-n 2 --dist loadgroup --no-loadscope-reorder" spreads it (conftest.py)
	$(BIN)/pytest $(XDIST); rc=$$?; bash packaging/docker/engine.sh stop || true; exit $$rc

test-fast: $(STAMP)
	bash packaging/edge/test-host.sh
	$(BIN)/pytest $(XDIST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench plugins
	$(BIN)/ruff format --check src tests bench plugins
	$(BIN)/lint-imports
	$(BIN)/mypy

$(BENCH_VENV)/.installed: bench/requirements.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r bench/requirements.txt
	touch $(BENCH_VENV)/.installed

bench: $(STAMP) $(BENCH_VENV)/.installed
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/tracking.py --anchor-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/features.py --anchor-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/serving.py --anchor-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/drift.py --anchor-python $(BENCH_VENV)/bin/python
	$(BIN)/python bench/loop.py
	$(BIN)/python bench/wide_ingest.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/cli.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) mlops-demo
