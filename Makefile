# jobgate developer targets. `make dev` starts the whole system locally; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
SAM_VENV ?= .venv-sam
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test unit integration e2e security lint validate build bench soak manifest install clean docs docs-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,zyra]"
	touch $(STAMP)

install: $(STAMP)

$(SAM_VENV)/bin/sam:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q aws-sam-cli

dev: $(STAMP)
	$(BIN)/jobgate dev

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/python -m pytest -q tests/e2e

# Tenancy, keys, limits, hostile input and the schemathesis run (also part of `make test`).
security: $(STAMP)
	$(BIN)/python -m pytest -q tests/security

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

validate: $(STAMP) $(SAM_VENV)/bin/sam
	$(BIN)/cfn-lint template.yaml
	$(SAM_VENV)/bin/sam validate --lint --region us-east-1

build: $(SAM_VENV)/bin/sam
	PYENV_VERSION=3.11.7:3.12.1 $(SAM_VENV)/bin/sam build

# docs/api.md is written from the API's OpenAPI schema; docs-check (CI) fails when it is stale.
docs: $(STAMP)
	$(BIN)/python -m jobgate.cli.apidoc docs/api.md

docs-check: $(STAMP)
	$(BIN)/python -m jobgate.cli.apidoc --check docs/api.md

manifest: $(STAMP)
	$(BIN)/python -m jobgate.commandsets.manifest export

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The reliability suite at full size: 500 jobs from 20 concurrent clients, then every fault test.
soak: $(STAMP)
	JOBGATE_RELIABILITY_JOBS=500 $(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability

clean:
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
