"""The files one stage hands to the next, owned by no stage: where every output lives (paths.py), how a run
directory is read and checked (rundir.py: the one reader of what training/ writes, for mia/ and analysis/),
and what an evaluation's result tables hold (schema.py: experiment ids, metric and column names, the
comparison `Study` that mia/ writes results for and analysis/ reads). docs/run_directory.md describes the files."""
