#!/usr/bin/env python
"""Smoke test of the MIA pipeline on a runs directory: artifacts present with the documented shapes and
finite values, every attack returns finite raw scores, and on a null copy of each experiment (the
membership permuted on disk) the real evaluation gives every attack an AUC near 0.5.
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

from artifacts import paths
from artifacts.rundir import Signals, load_experiment
from mia.attacks import ATTACKS, AttackSettings, run_attack
from mia.cli import settings_for
from mia.evaluate import attack_input, evaluate_experiment, find_experiment_dirs, shadow_rows
from mia.metrics import compute_metrics
from utils.errors import UsageError, cli_main
from utils.io import save_npy

# |AUC - 0.5| allowed on the null copy, in standard errors of the AUC of membership-independent scores.
# 4 sigma: with 12 attacks per experiment a false alarm has probability < 1e-3 (Bonferroni: 12 x 6e-5);
# a pool of 1,297 (digits) gives sigma 0.016, so the tolerance is 0.064.
NULL_SIGMAS = 4.0


def build_tiny_study(runs_dir: Path) -> None:
    import train

    train.main(["--dataset", "digits", "--methods", "dense", "--epochs", "6", "--batch-size", "64",
                "--num-shadows", "4", "--sens-draws", "2", "--no-eval", "--runs-dir", str(runs_dir)])


def null_auc_sd(is_member: np.ndarray) -> float:
    """Standard deviation of the AUC of scores independent of membership (Mann-Whitney U / (n1 n0), no
    ties): sqrt((n1 + n0 + 1) / (12 n1 n0))."""
    n1 = int(np.sum(is_member))
    n0 = len(is_member) - n1
    return float(np.sqrt((n1 + n0 + 1) / (12 * n1 * n0)))


def artifact_rows(exp: Path, sig: Signals) -> list[tuple[str, bool, str]]:
    """What load_experiment does not check already: dtypes, finiteness, the configured number of
    queries, and the balanced keep matrix (every example a member of exactly M // 2 models)."""
    m, n, q, c = sig.logits.shape
    finite = all(np.isfinite(sig.logits[r]).all() for r in range(m))
    sens_ok = sig.sensitivity is not None and all(np.isfinite(sig.sensitivity[r]).all() for r in range(m))
    keep_all = np.load(exp / paths.KEEP_MATRIX)
    return [
        ("artifacts", finite and sig.logits[0].dtype == np.float32 and sens_ok
         and q == sig.config.get("mia_queries", q), f"{m} models, pool {n}, {q} queries, {c} classes, finite"),
        ("balanced keep", bool((keep_all.sum(0) == len(keep_all) // 2).all()),
         f"every example in exactly {len(keep_all) // 2} of {len(keep_all)} models"),
    ]


def attack_rows(sig: Signals, st: AttackSettings) -> list[tuple[str, bool, str]]:
    """Every attack against model 0: its raw scores (before compute_metrics maps non-finite values to
    finite ones) must be finite."""
    rows, inp = [], attack_input(sig, 0, shadow_rows(sig, 0))
    for attack in ATTACKS:
        try:
            scores = np.asarray(run_attack(attack, inp, st).scores, np.float64)
        except UsageError as e:
            rows.append((attack, False, str(e)))
            continue
        bad = int((~np.isfinite(scores)).sum())
        auc = compute_metrics(scores, sig.keep[0])["auc"]
        rows.append((attack, bad == 0, f"AUC {auc:.3f}, {bad} non-finite raw scores"))
    return rows


def permute_membership(exp: Path, dest: Path, seed: int = 0) -> Path:
    """A null copy of `exp` in `dest`: the pool columns of the keep matrix permuted (the same permutation
    for every model, each model's keep.npy = its new row), every other file linked, not copied.
    Example j is now claimed a member of the models that trained on example perm[j]: the columns of the
    balanced matrix are independent draws, so the claimed membership is independent of j's signals,
    while every count the attacks see (M // 2 members per example, ~pool / 2 per model, one IN shadow
    fewer for the target's members) keeps its structure. (A fixed point perm[j] = j keeps its true
    membership: about one example in the pool.)"""
    keep = np.load(exp / paths.KEEP_MATRIX)
    null = keep[:, np.random.default_rng(seed).permutation(keep.shape[1])]
    for src in sorted(exp.rglob("*")):
        if src.is_file() and src.name not in (paths.KEEP, paths.KEEP_MATRIX):
            link = dest / src.relative_to(exp)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src.resolve())
    save_npy(null, dest / paths.KEEP_MATRIX)
    for i, row in enumerate(null):
        if paths.model_dir(dest, i).is_dir():
            save_npy(row, paths.model_dir(dest, i) / paths.KEEP)
    return dest


def null_rows(exp: Path, st: AttackSettings, tmp: Path, attacks=tuple(ATTACKS)) -> list[tuple[str, bool, str]]:
    """The evaluation the scripts run (evaluate_experiment, from disk) on the null copy of `exp`."""
    null = permute_membership(exp, tmp / "null" / exp.resolve().relative_to(exp.resolve().anchor))
    res = evaluate_experiment(null, list(attacks), "0", settings=st)
    tol = NULL_SIGMAS * null_auc_sd(np.load(null / paths.KEEP_MATRIX)[0])
    rows = [(f"null {a}", False, msg) for a, msg in res["errors"].items()]
    for attack, r in res["attacks"].items():
        auc = r["mean"]["auc"]
        rows.append((f"null {attack}", abs(auc - 0.5) < tol, f"AUC {auc:.3f} with permuted membership (|AUC - 0.5| < {tol:.3f})"))
    return rows


def check_experiment(exp: Path, st: AttackSettings, tmp: Path) -> list[tuple[str, str, bool, str]]:
    """(experiment, check, passed, detail) rows."""
    sig = load_experiment(exp)
    rows = artifact_rows(exp, sig) + attack_rows(sig, st) + null_rows(exp, st, tmp)
    return [(str(exp), *r) for r in rows]


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
        st = settings_for(args.device)
        rows = [r for exp in find_experiment_dirs(runs) for r in check_experiment(exp, st, Path(tmp))]
    width = max(len(r[1]) for r in rows)
    for exp, check, ok, detail in rows:
        print(f"{'PASS' if ok else 'FAIL'}  {check:<{width}}  {detail}  [{exp}]")
    failed = sum(not r[2] for r in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
