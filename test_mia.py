#!/usr/bin/env python
"""Smoke test of the MIA pipeline on a runs directory: artifacts present with the documented shapes,
every attack runs with finite scores, and a permuted-membership null case scores AUC near 0.5.
Prints a table; exits 1 when a check fails (2 on bad input).

  python test_mia.py                     # builds a tiny digits study in a temporary directory first
  python test_mia.py --runs-dir ./runs
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from configs import paths
from mia.artifacts import load_experiment
from mia.attacks import ATTACKS, AttackSettings
from mia.evaluate import evaluate_experiment, find_experiment_dirs
from mia.metrics import compute_metrics
from utils.errors import cli_main

NULL_TOLERANCE = 0.06  # |AUC - 0.5| allowed for the null case (pool of ~1,300: std ~0.016)


def build_tiny_study(runs_dir: Path) -> None:
    import train

    train.main(["--dataset", "digits", "--methods", "dense", "--epochs", "6", "--batch-size", "64",
                "--num-shadows", "4", "--sens-draws", "2", "--no-eval", "--runs-dir", str(runs_dir)])


def check_experiment(exp: Path, st: AttackSettings) -> list[tuple[str, str, bool, str]]:
    """(experiment, check, passed, detail) rows."""
    rows, name = [], str(exp)
    sig = load_experiment(exp)
    m, n, q, c = sig.logits.shape
    rows.append((name, "artifacts", sig.keep.shape == (m, n) and sig.labels.shape == (n,)
                 and (sig.sensitivity is None or sig.sensitivity.shape == (m, n, c)),
                 f"{m} models, pool {n}, {q} queries, {c} classes"))
    rows.append((name, "balanced keep", bool((load_keep_counts(exp) == load_keep_counts(exp)[0]).all()),
                 "every example in the same number of models"))
    res = evaluate_experiment(exp, list(ATTACKS), "0", settings=st)
    for attack in ATTACKS:
        if attack in res["errors"]:
            rows.append((name, attack, False, res["errors"][attack]))
            continue
        auc = res["attacks"][attack]["mean"]["auc"]
        rows.append((name, attack, bool(np.isfinite(auc)), f"AUC {auc:.3f}"))
    # null case: the target's true-class confidence against a random permutation of its membership
    from scipy.special import softmax

    conf = softmax(np.asarray(sig.logits[0][:, 0], np.float64), axis=-1)[np.arange(n), sig.labels]
    null_auc = compute_metrics(conf, np.random.default_rng(0).permutation(sig.keep[0]))["auc"]
    rows.append((name, "null case", abs(null_auc - 0.5) < NULL_TOLERANCE, f"AUC {null_auc:.3f} with permuted membership"))
    return rows


def load_keep_counts(exp: Path) -> np.ndarray:
    return np.load(exp / paths.KEEP_MATRIX).sum(0)


@cli_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default=None, help="existing runs directory (default: build a tiny digits study)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(args.runs_dir) if args.runs_dir else Path(tmp) / "runs"
        if args.runs_dir is None:
            build_tiny_study(runs)
        rows = [r for exp in find_experiment_dirs(runs) for r in check_experiment(exp, AttackSettings(device=args.device))]
    width = max(len(r[1]) for r in rows)
    for exp, check, ok, detail in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {check:<{width}}  {detail}  [{exp}]")
    failed = sum(not r[2] for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
