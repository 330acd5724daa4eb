# Threadline: `make run` serves the API locally, `make test` runs the whole suite.
# Every target installs what it needs by itself.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
EVENT ?= events/rest-chat.json

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck unit integration invoke clean

help:  ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

install: $(BIN)/.installed node_modules/.installed  ## Create .venv and install DynamoDB Local

run: install  ## Serve the API on HOST:PORT with DynamoDB Local (data under .data/)
	HOST=$(HOST) PORT=$(PORT) $(BIN)/python -m devtools.serve

test: install browser clients lint typecheck validate  ## The whole suite: lint, types, unit, integration, browser and client tests
	THREADLINE_BROWSER_TESTS=required $(BIN)/pytest

lint: $(BIN)/.installed  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed  ## mypy --strict on src/
	$(BIN)/mypy

unit: $(BIN)/.installed  ## Only the fast unit tests (moto, no processes)
	$(BIN)/pytest tests/unit

integration: install  ## Only the tests on DynamoDB Local and real servers
	$(BIN)/pytest tests/integration

invoke: install  ## Run the Mangum handler in-process on EVENT=events/<name>.json
	$(BIN)/python -m devtools.invoke $(EVENT)

# Deployment, the streaming runtime and benchmarks live in their own files.
-include mk/*.mk

clean:  ## Remove the virtual environment, node_modules and local data
	rm -rf $(VENV) node_modules tests/clients/node/node_modules .data .aws-sam .pytest_cache .mypy_cache .ruff_cache
