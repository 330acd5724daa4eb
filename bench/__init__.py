"""`make bench`: Threadline's benchmarks, each figure beside a baseline measured in the same run.

`python -m bench` runs them all and prints one Markdown table (also written to
`.data/bench/latest.md`); `python -m bench coldstart streaming` runs only those.
`BENCH_QUICK=1` shrinks every repetition count for a smoke run. A MISS is printed,
never fatal: the exit status is 0 unless a benchmark itself broke (an ERROR row).

One module per benchmark, each with `run(lab) -> list[Row]`:

- `coldstart`       fresh processes: ours (the Lambda entry, a chat turn) against a bare
                    FastAPI + Mangum app, with and without `.pyc` files;
- `warm`            in-process turns on DynamoDB Local, continued against stateless,
                    and the DynamoDB calls each makes;
- `streaming`       upstream token to client chunk, through uvicorn and through the
                    Lambda streaming runtime, against the direct client -> upstream path;
- `session_length`  a turn on a 10,000-message session against a 10-message one;
- `memory`          peak RSS of the warm function after 1,000 and 5,000 turns, against
                    a bare FastAPI + Mangum app serving as many requests.

See docs/benchmarks.md for what each row measures and how.
"""
