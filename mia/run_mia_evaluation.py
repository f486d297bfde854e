#!/usr/bin/env python
"""Every attack on one experiment directory (tables, JSON and plots as the unified evaluation).

  python mia/run_mia_evaluation.py --experiment-dir runs/dpf/sparsity_0.9/cifar10 [--targets all]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs import paths  # noqa: E402
from mia.attacks import ATTACKS, AttackSettings, check_attacks  # noqa: E402
from mia.evaluate import check_targets  # noqa: E402
from mia.unified_mia_evaluation import run_unified  # noqa: E402
from utils.errors import UsageError, cli_main  # noqa: E402


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment-dir", required=True, help="an experiment directory (holds keep_matrix.npy)")
    p.add_argument("--results-dir", default="./results")
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    p.add_argument("--targets", default="0")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    check_attacks(args.attacks)
    check_targets(args.targets)
    exp = Path(args.experiment_dir)
    if not (exp / paths.KEEP_MATRIX).exists():
        raise UsageError(f"{exp} is not an experiment directory (no {paths.KEEP_MATRIX}); see README, 'Run directory layout'")
    from training.trainer import resolve_device

    st = AttackSettings(seed=args.seed, device=str(resolve_device(args.device)))
    _, failures = run_unified([exp], args.results_dir, args.attacks, args.targets, st)
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written")


if __name__ == "__main__":
    main(sys.argv[1:])
