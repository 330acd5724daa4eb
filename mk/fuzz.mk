# The long fuzz run: the same fuzzers as `make test` (the official OpenAI spec, our own
# OpenAPI document, full-Unicode paths, queries and headers), with FUZZ_EXAMPLES
# examples per operation and route and a new seed each run. A failure prints the seed.

.PHONY: fuzz

FUZZ_EXAMPLES ?= 1000

fuzz: install  ## Fuzz long (FUZZ_EXAMPLES=1000 per operation/route, a new seed each run)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_RANDOM=1 $(BIN)/pytest --timeout=0 -p no:cacheprovider \
		tests/reliability/test_fuzz_official_spec.py tests/reliability/test_fuzz_openapi.py \
		tests/reliability/test_fuzz_parsing.py
