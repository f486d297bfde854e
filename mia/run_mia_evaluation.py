#!/usr/bin/env python
"""Every attack on one experiment directory (tables, JSON and plots as the unified evaluation).

  python mia/run_mia_evaluation.py --experiment-dir runs/dpf/sparsity_0.9/cifar10 [--targets all]
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from artifacts import paths
from mia.attacks import ATTACKS
from mia.cli import mia_parser, parse
from mia.unified_mia_evaluation import run_unified
from utils.errors import UsageError, cli_main


@cli_main
def main(argv=None) -> None:
    args, cfg, st = parse(mia_parser(__doc__, list(ATTACKS), experiment=True), argv)
    exp = Path(args.experiment_dir)
    if not (exp / paths.KEEP_MATRIX).exists():
        raise UsageError(f"{exp} is not an experiment directory (no {paths.KEEP_MATRIX}); see docs/run_directory.md")
    _, failures = run_unified([exp], cfg, st, commands=[shlex.join(["python", "mia/run_mia_evaluation.py", *(argv or [])])])
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written")


if __name__ == "__main__":
    main(sys.argv[1:])
