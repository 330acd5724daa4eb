# Deployment: the template's checks, the function's package, `sam deploy`, and one
# event through the streaming runtime. See docs/deployment.md.
#
#   make validate                 cfn-lint on template.yaml, the SAM translator, cfn-lint on its output
#   make build                    sam build: .aws-sam/build (the function's package and the built template)
#   make deploy                   make build, then sam deploy --guided
#   make invoke-stream EVENT=...  one event through the streaming runtime, each chunk with its arrival time
#   make smoke URL=... KEY=...    check a deployed stack: streaming, sessions, errors, CORS, the page
#
# LAMBDA_RUNTIME picks the function's Python for the build and the deploy together
# (the template's PythonRuntime parameter); the package is built for arm64.

LAMBDA_RUNTIME ?= python3.13
export LAMBDA_RUNTIME
DEPLOY_VENV := $(VENV)/deploy
SAM_VENV := $(VENV)/sam
SAM := SAM_CLI_TELEMETRY=0 $(SAM_VENV)/bin/sam
# The Python that runs the package build: the project's where it exists; inside a SAM
# build container (sam build --use-container) the image's own, which is the function's.
BUILD_PYTHON = $(shell [ -x $(BIN)/python ] && echo $(BIN)/python || echo python3)

.PHONY: validate build build-ThreadlineFunction deploy invoke-stream coldstart smoke deploy-tools sam-cli

# The template checks need aws-sam-translator, which pins pydantic~=2.13 while the
# function pins 2.14: they get a virtualenv of their own, inside .venv.
$(DEPLOY_VENV)/.installed: requirements-deploy.txt
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-deploy.txt
	touch $@

$(SAM_VENV)/.installed: deploy/requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --disable-pip-version-check -r deploy/requirements-sam.txt
	touch $@

deploy-tools: $(DEPLOY_VENV)/.installed

sam-cli: $(SAM_VENV)/.installed

validate: $(DEPLOY_VENV)/.installed  ## Check template.yaml: cfn-lint, SAM translator, cfn-lint on its output
	$(DEPLOY_VENV)/bin/python deploy/validate_template.py

# Bytecode is written by a CPython of the function's version (the project's, python3.X on
# PATH, pyenv's, or TARGET_PYTHON). Where there is none, the build runs in SAM's image of
# that Python instead (needs Docker), and says so; it never ships a package without .pyc.
build: $(SAM_VENV)/.installed $(BIN)/.installed  ## Build the function's package with sam build (.aws-sam/build)
	@if $(BIN)/python deploy/build_function.py --find-python $(LAMBDA_RUNTIME) >/dev/null; then \
		$(SAM) build --build-in-source --parameter-overrides PythonRuntime=$(LAMBDA_RUNTIME); \
	else \
		echo "build: no CPython for $(LAMBDA_RUNTIME) here: building in SAM's $(LAMBDA_RUNTIME) image instead (sam build --use-container, needs Docker)"; \
		$(SAM) build --use-container --parameter-overrides PythonRuntime=$(LAMBDA_RUNTIME); \
	fi

# What `sam build` runs for the template's `BuildMethod: makefile` (ARTIFACTS_DIR is sam's).
build-ThreadlineFunction:
	$(BUILD_PYTHON) deploy/build_function.py --out "$(ARTIFACTS_DIR)" --runtime $(LAMBDA_RUNTIME) --architecture arm64

deploy: validate build  ## Deploy with sam deploy --guided (asks for the stack, region and parameters)
	$(SAM) deploy --guided --template-file .aws-sam/build/template.yaml \
		--capabilities CAPABILITY_IAM --parameter-overrides PythonRuntime=$(LAMBDA_RUNTIME)

# EVENT defaults to a streamed chat request here (the Makefile's default is buffered).
invoke-stream: STREAM_EVENT = $(if $(filter command line environment,$(origin EVENT)),$(EVENT),events/rest-stream.json)
invoke-stream: install  ## Stream one EVENT through the streaming runtime; print chunks with arrival times
	$(BIN)/python deploy/invoke_stream.py $(STREAM_EVENT)

coldstart: install  ## Measure cold starts of the package with and without bytecode, for LAMBDA_RUNTIME
	$(BIN)/python deploy/coldstart.py --runtime $(LAMBDA_RUNTIME)

# Standard library only: any python3 runs it, no install needed. ORIGIN= (optional) is a
# browser origin the stack allows (CorsOrigins), to check CORS as a browser sees it.
smoke:  ## Check a deployed stack right after sam deploy: make smoke URL=<ApiUrl> KEY=<an API key> [ORIGIN=...]
	@test -n "$(URL)" -a -n "$(KEY)" || { echo "usage: make smoke URL=<the stack's ApiUrl> KEY=<an API key> [ORIGIN=https://...]"; exit 2; }
	@$(PYTHON) deploy/smoke.py --url "$(URL)" --key "$(KEY)" $(if $(ORIGIN),--origin "$(ORIGIN)")
