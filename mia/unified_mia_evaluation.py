#!/usr/bin/env python
"""Both attack suites on every experiment of a runs directory, then the study's tables and plots.

  python mia/unified_mia_evaluation.py --runs-dir ./runs --results-dir ./results [--targets all]

Writes into --results-dir:
  comprehensive_mia_results.csv       one row per experiment: experiment, method, sparsity, dataset, arch,
                                      train_acc, test_acc, then <attack>_<metric> (+ <attack>_tpr_at_*_below_floor:
                                      True when that FPR level is below 1/#non-members, i.e. not measured)
  comprehensive_mia_results_long.csv  experiment, method, sparsity, dataset, attack, target, metric, value, below_floor
  training_results.csv                one row per trained model: method, sparsity, accuracies, losses, time, sparsity
  mia/unified/<experiment>.json       every metric, ROC points, attack settings
  plots/privacy_utility_auc.png, plots/privacy_utility_tpr_at_0.1pct_fpr.png, plots/heatmap_auc.png,
  plots/roc_<experiment>.png                (one target's curve per attack, labelled with that target and its AUC)
Points below the FPR floor are drawn hollow (privacy-utility) or not at all (ROC).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from configs import paths
from mia import plots
from mia.artifacts import finished_model_dirs, read_model_record
from mia.attacks import ATTACKS, AttackSettings
from mia.cli import mia_parser, parse, settings_for
from mia.evaluate import evaluate_all, experiment_id, find_experiment_dirs, print_table, write_results
from utils.errors import UsageError, cli_main
from utils.io import save_text

COMPREHENSIVE = "comprehensive_mia_results"
TRAINING = "training_results.csv"
TRAINING_COLS = ["experiment", "method", "sparsity", "dataset", "arch", "layers", "model_index", "num_train",
                 "train_acc", "test_acc", "val_acc", "train_loss", "test_loss", "best_epoch", "epochs",
                 "wall_time_s", "images_per_s", "target_sparsity", "measured_sparsity", "sparsity_all_params", "device"]


def training_results(exp_dirs: list[Path]) -> pd.DataFrame:
    """One row per finished model: its recipe joined with its measurements (artifacts.model_record)."""
    rows = [read_model_record(exp, d) for exp in exp_dirs for d in finished_model_dirs(exp)]
    return pd.DataFrame([{k: r.get(k) for k in TRAINING_COLS} for r in rows], columns=TRAINING_COLS)


def roc_of(summary: dict) -> dict:
    """The ROC an attack's summary holds (one target's curve) with that target's own AUC and FPR floor,
    so the plot labels what it draws rather than the mean AUC over targets."""
    own = summary["per_target"][str(summary["roc"]["target"])]
    return {**summary["roc"], "auc": own["auc"], "min_fpr": own["min_fpr"]}


def make_plots(df: pd.DataFrame, results: list[dict], plot_dir: Path) -> list[Path]:
    if df.empty:
        return []
    out = [plots.privacy_utility(df, m, plot_dir / f"privacy_utility_{m}.png") for m in ("auc", "tpr_at_0.1pct_fpr")]
    out.append(plots.heatmap(df, "auc", plot_dir / "heatmap_auc.png"))
    for r in results:
        rocs = {a: roc_of(v) for a, v in r["attacks"].items()}
        if rocs:
            out.append(plots.roc_curves(f"{r['experiment']} ({r['dataset']})", rocs, plot_dir / f"roc_{experiment_id(r)}.png"))
    return out


def copy_tables(src: Path, dst: Path, names: list[str]) -> None:
    """Atomic copies of written tables (a reader never sees half a CSV)."""
    for name in names:
        save_text((src / name).read_text(), dst / name)


def run_unified(exp_dirs: list[Path], results_dir, attacks: list[str], targets: str, st: AttackSettings,
                summary_dir=None, logger=None) -> tuple[pd.DataFrame, list[str]]:
    """Evaluate, write CSVs/JSON/plots; returns the wide table and the problems met (already printed)."""
    results_dir = Path(results_dir)
    results, failures = evaluate_all(exp_dirs, attacks, targets, st)
    unified = paths.mia_results_dir(results_dir, "unified")
    df = write_results(results, unified, COMPREHENSIVE)
    save_text(training_results(exp_dirs).to_csv(index=False), unified / TRAINING)
    made = make_plots(df, results, results_dir / "plots")
    # the tables also at the results root and, in the original layout, the two main ones in the project root
    copy_tables(unified, results_dir, [f"{COMPREHENSIVE}.csv", f"{COMPREHENSIVE}_long.csv", TRAINING])
    if summary_dir is not None:
        copy_tables(unified, Path(summary_dir), [TRAINING, f"{COMPREHENSIVE}.csv"])
    print_table(df, attacks)
    print(f"\nresults: {results_dir} ({len(results)} experiment(s), {len(made)} plot(s))")
    if logger is not None:
        logger.log_training([read_model_record(e, d) for e in exp_dirs for d in finished_model_dirs(e)])
        logger.log_attacks(df)
        logger.finish()
    return df, failures


def evaluate_study(exp_dirs: list[Path], args, logger=None) -> None:
    """train.py's last stage: every attack on the configurations it trained (args: train.py's flags)."""
    _, failures = run_unified(exp_dirs, args.results_dir, args.attacks or list(ATTACKS), args.targets,
                              settings_for(args.device, args.seed), summary_dir=args.summary_dir, logger=logger)
    if failures:
        raise UsageError(f"{len(failures)} evaluation problem(s), listed above; the other results were written")


@cli_main
def main(argv=None) -> None:
    parser = mia_parser(__doc__, list(ATTACKS), "results root (tables, plots, mia/unified/)", summary_dir=True)
    args, st = parse(parser, argv)
    _, failures = run_unified(find_experiment_dirs(args.runs_dir), args.results_dir, args.attacks, args.targets, st,
                              args.summary_dir)
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written to {args.results_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
