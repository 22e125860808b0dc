# One command per habit. `make run` and `make test` bootstrap .venv on a fresh clone.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
TARGET ?=
DATA_DIR ?= data
# h2load for make bench's cross-check when the system has none (ops/fetch_h2load.sh).
H2LOAD_DIR := $(VENV)/h2load

.PHONY: run test unit e2e lint proto bench loadtest fuzz clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(PY) run_cluster.py --data-dir $(DATA_DIR) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q tests $(ARGS)

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit $(ARGS)

e2e: $(STAMP)
	$(PY) -m pytest -q tests/e2e $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy core actors ops bench loadtest run_cluster.py

proto: $(STAMP)
	$(PY) -m proto.generate

bench: $(STAMP)
	@command -v h2load >/dev/null || test -d $(H2LOAD_DIR) || ops/fetch_h2load.sh $(H2LOAD_DIR) \
		|| echo "make bench goes on without h2load: no dry-run ratio"
	$(PY) -m bench $(ARGS)

loadtest: $(STAMP)
	$(PY) -m loadtest $(if $(TARGET),--target $(TARGET),) $(ARGS)

fuzz: $(STAMP)
	$(PY) -m loadtest.fuzz $(if $(TARGET),--target $(TARGET),) $(ARGS)

clean:
	rm -rf $(VENV) $(DATA_DIR) results .pytest_cache .mypy_cache .ruff_cache
