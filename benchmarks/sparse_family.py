#!/usr/bin/env python
"""The sparse-training family's table from a finished study's results directory (docs/benchmarks.md, "The sparse-training family"):
per configuration its family, test accuracy, LiRA and RMIA AUC and TPR at 0.1% FPR, the paired differences
against dense and against static at the same sparsity (with their intervals, from paired_comparisons.csv), and the
training time per model against static's (training_results.csv: the mean wall time of a configuration's models).

  python train.py --methods dense static snip synflow dpf gmp rigl set finetune imp lth --sparsities 0.9 \\
      --prune-rounds 3 --num-shadows 8 --targets all --results-dir results   # the study (any preset)
  python benchmarks/sparse_family.py --results-dir results           # this table

Reads only the CSVs the study writes (mia/unified_mia_evaluation.py, mia/compare.py); trains nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from pruning import PRUNING_METHODS

ATTACKS = ("lira", "rmia")
METRICS = ("auc", "tpr_at_0.1pct_fpr")


def family(method: str) -> str:
    """The compression literature's families, read off the registry's switches; pruning a trained model once
    (finetune, filter pruners) and in rounds (imp, lth) apart, for WeMeM's question (does iterative leak more?)."""
    spec = PRUNING_METHODS.get(method)
    if spec is None:
        return "dense"
    if spec.iterative:
        return "trained model, iterative"
    if spec.source:
        return "trained model"
    if spec.grow or spec.straight_through:
        return "dynamic"
    if spec.one_shot:
        return "at initialisation"
    return "gradual"


def paired(pairs: pd.DataFrame, a: str, b: str, attack: str, metric: str) -> str:
    rows = pairs[(pairs["a"] == a) & (pairs["b"] == b) & (pairs["metric"] == metric)
                 & (pairs["attack"].fillna("") == attack)]
    if rows.empty:
        return ""
    r = rows.iloc[0]
    return f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"


def table(results: Path) -> pd.DataFrame:
    wide = pd.read_csv(results / "comprehensive_mia_results.csv")
    train = pd.read_csv(results / "training_results.csv")
    pairs_file = results / "paired_comparisons.csv"
    pairs = pd.read_csv(pairs_file) if pairs_file.exists() else pd.DataFrame(columns=["a", "b", "attack", "metric"])
    seconds = train.groupby("experiment")["wall_time_s"].mean()
    fit = train.groupby("experiment")["train_acc"].mean()  # leakage follows fit: the table shows it beside leakage
    rows = []
    for _, r in wide.iterrows():
        exp, method, s = r["experiment"], r["method"], r["sparsity"]
        static = wide[(wide["method"] == "static") & (wide["sparsity"] == s) & (wide["dataset"] == r["dataset"])]
        static_exp = static["experiment"].iloc[0] if len(static) else None
        row = {"experiment": exp, "family": family(method), "train_acc": fit.get(exp), "test_acc": r["test_acc"]}
        for attack in ATTACKS:
            for metric in METRICS:
                row[f"{attack}_{metric}"] = r.get(f"{attack}_{metric}")
            row[f"{attack}_auc - dense"] = paired(pairs, exp, "dense", attack, "auc")
            row[f"{attack}_auc - static"] = paired(pairs, exp, static_exp, attack, "auc") if static_exp else ""
        row["test_acc - static"] = paired(pairs, exp, static_exp, "", "test_acc") if static_exp else ""
        row["s/model"] = seconds.get(exp)
        row["time / static"] = seconds.get(exp) / seconds[static_exp] if static_exp in seconds else None
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-dir", default="results")
    a = p.parse_args(argv)
    results = Path(a.results_dir)
    if not (results / "comprehensive_mia_results.csv").exists():
        print(f"error: {results} has no comprehensive_mia_results.csv (run the study first)", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.3f}".format):
        print(table(results).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
