#!/usr/bin/env python
"""Rebuild a study's comparisons and report from the scores an evaluation saved (analysis/compare.py:
intervals, paired differences, per-class leakage; analysis/report.py: report.md and plots/).

  python mia/compare.py --results-dir ./results [--pairs dpf_0.9:static_0.9 ...] [--n-boot 1000] [--bootstrap-seed 0]

Writes attack_intervals.csv, paired_comparisons.csv, per_class_auc.csv, findings.csv, report.md and plots/
into --results-dir. --seed is the deprecated name of --bootstrap-seed here.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from analysis import report
from analysis.compare import run_comparisons
from configs.evaluation import COMPARE_FIELDS, add_evaluation_args, add_seed_alias, evaluation_from_args
from utils.errors import UsageError, cli_main


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_evaluation_args(p, ("results_dir", *COMPARE_FIELDS))
    add_seed_alias(p, "bootstrap_seed")
    cfg = evaluation_from_args(p.parse_args(argv))
    study = run_comparisons(cfg.results_dir, cfg.pairs, cfg.compare_settings())
    out = report.build_from_disk(Path(cfg.results_dir), study, [shlex.join(["python", "mia/compare.py", *(argv or [])])])
    print(report.summary_line(study, out))
    if study.failures:
        raise UsageError(f"{len(study.failures)} comparison problem(s), listed above; the rest was written")


if __name__ == "__main__":
    main(sys.argv[1:])
