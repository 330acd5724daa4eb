# Benchmarks: one table, every figure beside a baseline measured in the same run
# (docs/benchmarks.md says what each row measures). BENCH_QUICK=1 shrinks the
# repetitions for a smoke run. A MISS is reported, never a failure.

.PHONY: bench bench-litellm

# LiteLLM's proxy, the relay benchmark's optional anchor (BENCH_LITELLM=1), in a
# virtualenv of its own: `litellm[proxy]` does not resolve from PyPI as pinned, so the
# wheel goes in with its `proxy` extra's requirements, less the `litellm-proxy*` ones
# and with `litellm-enterprise` unpinned (its pinned post-release is not published).
LITELLM_VERSION ?= 1.110.2
LITELLM_VENV := $(VENV)/litellm

bench: install  ## Run the benchmarks and print one table (BENCH_LITELLM=1: with LiteLLM, after make bench-litellm)
	$(BIN)/python -m bench

bench-litellm: $(LITELLM_VENV)/.installed  ## Install LiteLLM's proxy into .venv/litellm for BENCH_LITELLM=1

$(LITELLM_VENV)/.installed: mk/bench.mk
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/pip install --quiet --disable-pip-version-check litellm==$(LITELLM_VERSION)
	$(LITELLM_VENV)/bin/python -c "import importlib.metadata as m, re; \
	  reqs = [r.split(';')[0].strip() for r in m.requires('litellm') or [] if re.search(r'extra == .proxy.$$', r)]; \
	  reqs = [r.split('==')[0] if r.startswith('litellm-') else r for r in reqs if not r.startswith('litellm-proxy')]; \
	  print('\n'.join(reqs))" > $(LITELLM_VENV)/proxy-requirements.txt
	$(LITELLM_VENV)/bin/pip install --quiet --disable-pip-version-check -r $(LITELLM_VENV)/proxy-requirements.txt
	touch $@
