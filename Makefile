# jobgate developer targets. `make dev` starts the whole system locally; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
SAM_VENV ?= .venv-sam
# checkov pins its own boto3, pydantic and more: it lives in a venv of its own. Pinned, so a new
# release's new checks arrive by a deliberate bump, not in the middle of someone's change.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION ?= 3.3.30
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

$(CHECKOV_VENV)/bin/checkov:
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q "checkov==$(CHECKOV_VERSION)"

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

# What AWS would refuse at deploy time, found first (docs/deploy.md, "Checks before deploying"):
# cfn-lint on template.yaml and on its SAM translation (E3505 and friends exist only there), SAM's
# own validation, and checkov. cfn-lint errors and warnings fail; a finding accepted on purpose is
# ignored where it arises, with its reason (ACCEPTED in infra/translate_template.py, or the
# resource's cfn-lint Metadata). checkov findings are skipped inline in template.yaml, each with its
# reason. Then tests/unit/test_template_deploy.py (also part of `make test`): every SQS event
# source's visibility timeout is at least 6x its function's timeout, and every role grants each AWS
# action its function's code calls, and nothing more statement by statement.
validate: $(STAMP) $(SAM_VENV)/bin/sam $(CHECKOV_VENV)/bin/checkov
	$(BIN)/cfn-lint --non-zero-exit-code warning template.yaml
	$(BIN)/python infra/translate_template.py --output .aws-sam/validate/template.json
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_template_deploy.py
	$(SAM_VENV)/bin/sam validate --lint --region us-east-1
	$(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation -f template.yaml

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
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
