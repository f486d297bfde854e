"""Comparing configurations, from what the evaluation wrote (result files and saved scores, read through
artifacts/schema.py and artifacts/paths.py): paired bootstrap statistics (bootstrap.py), the pairs of a
study (compare.py), the study's findings (findings.py), report.md (report.py) and its figures (plots.py);
and the per-example stage (stage.py, per_example.py, pair_attack.py, section.py, figures.py). Above mia/ in
the layer order (tests/test_architecture.py): it may use mia/'s metric and attack functions, never the reverse."""
