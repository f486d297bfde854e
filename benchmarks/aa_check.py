#!/usr/bin/env python
"""The A/A check of the report's significance marks on real models: the quick preset trained
twice with different training seeds (--seed) and the same keep matrix (--mia-seed 0), so every
configuration of run 1 is compared with the same configuration of run 2 (dense - dense, ...): every
true difference is 0. Each repeat counts the cells mia/compare.py would mark significant after its
correction (mark_significance) and, for contrast, the raw ones (interval excluding 0). The promise: no
corrected-significant cell in at least 95% of the repeats.

  python benchmarks/aa_check.py --repeats 20 --out /tmp/aa     # 40 quick presets: ~1 h on 2 idle cores
  python benchmarks/aa_check.py --repeats 1 --out /tmp/aa      # one repeat, ~4 min
  python benchmarks/aa_check.py --first 20 --repeats 20 --out /tmp/aa   # 20 more, on new seeds (41-80)

Runs already trained under --out are reused (train.py --skip-existing).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import machine
from artifacts import paths
from analysis import bootstrap as bs
from analysis.compare import Settings, floor_flags, load_evaluations, mark_significance
from utils.errors import UsageError, cli_main

ROOT = Path(__file__).resolve().parents[1]


def train(out: Path, seed: int) -> Path:
    """The quick preset with training seed `seed` (keep matrix of --mia-seed 0): its results directory."""
    res = out / f"seed{seed}" / "results"
    if not (paths.mia_results_dir(res, "unified") / f"{paths.COMPREHENSIVE}.csv").exists():
        subprocess.run([sys.executable, str(ROOT / "train.py"), "--preset", "quick", "--seed", str(seed),
                        "--mia-seed", "0", "--runs-dir", str(out / f"seed{seed}" / "runs"), "--results-dir", str(res),
                        "--summary-dir", str(out / f"seed{seed}"), "--skip-existing"], check=True, cwd=ROOT)
    return res


def aa_rows(res1: Path, res2: Path, st: Settings) -> pd.DataFrame:
    """Each configuration of run 1 minus the same configuration of run 2: every attack and metric, with
    the corrected marks of mia/compare.py."""
    e1, e2 = (load_evaluations(paths.mia_results_dir(r, "unified")) for r in (res1, res2))
    rows = []
    for a in e1:
        b = next(e for e in e2 if e.key == a.key)
        members = a.members()
        ra, rb = (bs.bootstrap_attacks({k: e.scores(k) for k in a.attacks}, members, bs.METRICS, st.n_boot, st.seed)
                  for e in (a, b))
        for attack in ra:
            for metric in bs.METRICS:
                s = bs.difference(ra[attack][metric], rb[attack][metric], st.level)
                rows.append({"pair": f"{a.name} (seed 1 - seed 2)", "attack": attack, "metric": metric,
                             "difference": s["difference"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                             "se": s["se"], "df": s["df"], "p_value": s["p_value"], "excludes_zero": s["excludes_zero"], **floor_flags(metric, members)})
        s = bs.accuracy_difference([a.test_acc(t) for t in a.targets], [b.test_acc(t) for t in b.targets], st.level)
        rows.append({"pair": f"{a.name} (seed 1 - seed 2)", "attack": "", "metric": "test_acc", "below_floor": False,
                     "coarse": False, **{k: s[k] for k in ("difference", "ci_low", "ci_high", "se", "df", "p_value", "excludes_zero")}})
    d = pd.DataFrame(rows)
    return mark_significance(d, st.level)


@cli_main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--first", type=int, default=0, help="index of the first repeat (repeat r trains seeds 2r + 1 and 2r + 2): "
                   "--first 20 gives 20 repeats new to an earlier --repeats 20")
    p.add_argument("--out", default="aa_check", help="where the runs and results go")
    args = p.parse_args()
    if args.repeats < 1 or args.first < 0:
        raise UsageError(f"--repeats must be >= 1 and --first >= 0, got {args.repeats} and {args.first}")
    out = Path(args.out)
    print(machine())
    clean, all_rows = 0, []
    for r in range(args.first, args.first + args.repeats):
        d = aa_rows(train(out, 2 * r + 1), train(out, 2 * r + 2), Settings())
        all_rows.append(d.assign(repeat=r))
        measured, tested = d[~d["below_floor"]], d[d["family"] != ""]  # coarse cells: measured, not tested
        clean += not d["significant"].any()
        print(f"repeat {r}: {int(d['significant'].sum())} corrected-significant of {len(tested)} tested cells; raw "
              f"(interval excluding 0): {int(tested['excludes_zero'].sum())} tested, "
              f"{int(measured['excludes_zero'].sum())} of {len(measured)} measured", flush=True)
    print(f"no corrected-significant cell in {clean} of {args.repeats} repeats (promise: >= 95%)")
    d = pd.concat(all_rows)
    p_tested = d.loc[d["family"] != "", "p_value"].to_numpy(np.float64)
    print(f"tested p-values ({len(p_tested)}) below 0.001 / 0.005 / 0.05: "
          + " / ".join(f"{np.mean(p_tested < q):.4f}" for q in (0.001, 0.005, 0.05)) + " (their levels when calibrated)")
    print(calibration(d).to_string(float_format=lambda v: f"{v:.4f}"))


def calibration(d: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per attack and over all of them ("all"), over every repeat and configuration (AUC): the mean
    squared A/A difference (its true value is 0, so this is the variance the interval should estimate)
    against the mean estimated variance se^2, their ratio (1 when the interval's variance is right on
    average; above 1, some variation is not in it) with a 95% percentile interval over the repeats
    resampled with replacement (a repeat's cells share its two runs, so the repeat is the unit), and the
    share of raw 95% intervals that cover 0."""
    a = d[(d["metric"] == "auc") & d["se"].notna()].assign(sq=lambda x: x["difference"] ** 2, se2=lambda x: x["se"] ** 2)
    idx = np.random.default_rng(seed).integers(0, a["repeat"].nunique(), (n_boot, a["repeat"].nunique()))
    rows = {}
    for name, g in [*a.groupby("attack"), ("all", a)]:
        per = g.groupby("repeat")[["sq", "se2"]].sum().reindex(sorted(a["repeat"].unique()), fill_value=0.0)
        boot = per["sq"].to_numpy()[idx].sum(axis=1) / per["se2"].to_numpy()[idx].sum(axis=1)
        rows[name] = {"mean_sq_diff": g["sq"].mean(), "mean_se2": g["se2"].mean(), "ratio": g["sq"].sum() / g["se2"].sum(),
                      "ratio_low": np.percentile(boot, 2.5), "ratio_high": np.percentile(boot, 97.5),
                      "raw_coverage": 1 - g["excludes_zero"].mean(), "cells": len(g)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("attack")


if __name__ == "__main__":
    main()
