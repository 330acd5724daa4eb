# Benchmarks: one table, every figure beside a baseline measured in the same run
# (docs/benchmarks.md says what each row measures). BENCH_QUICK=1 shrinks the
# repetitions for a smoke run. A MISS is reported, never a failure.

.PHONY: bench

bench: install  ## Run the benchmarks and print one table
	$(BIN)/python -m bench
