# The clients people use, for tests/clients: the OpenAI SDK for Node, the Vercel AI SDK
# (npm, in tests/clients/node/ with its own lock file), OpenAI's Agents SDK and LangChain
# (PyPI, in the virtualenv .venv/clients). Neither touches the project's .venv or its
# node_modules. `make test` depends on `make clients`, so there the client tests run.

CLIENTS_NODE := tests/clients/node
CLIENTS_VENV := $(VENV)/clients

.PHONY: clients clients-test

$(CLIENTS_NODE)/node_modules/.installed: $(CLIENTS_NODE)/package.json $(CLIENTS_NODE)/package-lock.json
	cd $(CLIENTS_NODE) && npm ci --no-audit --no-fund --silent
	touch $@

$(CLIENTS_VENV)/.installed: tests/clients/requirements.txt
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	touch $@

clients: $(CLIENTS_NODE)/node_modules/.installed $(CLIENTS_VENV)/.installed  ## Install the client SDKs the client tests drive (npm, PyPI)

clients-test: install clients  ## Only the tests with real clients: Node SDK, AI SDK, Agents SDK, LangChain
	$(BIN)/pytest tests/clients
