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

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from configs import paths  # noqa: E402
from mia import plots  # noqa: E402
from mia.attacks import ATTACKS, AttackSettings, check_attacks  # noqa: E402
from mia.evaluate import (check_targets, evaluate_all, experiment_id, find_experiment_dirs, print_table,  # noqa: E402
                          write_results)
from utils.errors import UsageError, cli_main  # noqa: E402
from utils.io import load_json, save_text  # noqa: E402

COMPREHENSIVE = "comprehensive_mia_results"
TRAINING = "training_results.csv"
TRAINING_COLS = ["experiment", "method", "sparsity", "dataset", "arch", "layers", "model_index", "num_train",
                 "train_acc", "test_acc", "val_acc", "train_loss", "test_loss", "best_epoch", "epochs",
                 "wall_time_s", "images_per_s", "target_sparsity", "measured_sparsity", "sparsity_all_params", "device"]


def training_results(exp_dirs: list[Path]) -> pd.DataFrame:
    """One row per finished model, read from its experiment_summary.json."""
    rows = []
    for exp in exp_dirs:
        cfg = load_json(exp / paths.CONFIG)
        for i in range(cfg.get("num_shadows", 0) + 1):
            f = paths.model_dir(exp, i) / paths.SUMMARY
            if not (paths.model_dir(exp, i) / paths.COMPLETE).exists() or not f.exists():
                continue
            s = load_json(f)
            rows.append({"experiment": cfg.get("name"), **{k: s.get(k) for k in TRAINING_COLS[1:]},
                         "sparsity": cfg.get("sparsity"), "measured_sparsity": s.get("sparsity")})
    return pd.DataFrame(rows, columns=TRAINING_COLS)


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


def run_unified(exp_dirs: list[Path], results_dir, attacks: list[str], targets: str, st: AttackSettings,
                summary_dir=None, logger=None) -> tuple[pd.DataFrame, list[str]]:
    """Evaluate, write CSVs/JSON/plots; returns the wide table and the problems met (already printed)."""
    results_dir = Path(results_dir)
    results, failures = evaluate_all(exp_dirs, attacks, targets, st)
    df = write_results(results, paths.mia_results_dir(results_dir, "unified"), COMPREHENSIVE)
    for name in (f"{COMPREHENSIVE}.csv", f"{COMPREHENSIVE}_long.csv"):  # the tables at the results root
        shutil.copyfile(paths.mia_results_dir(results_dir, "unified") / name, results_dir / name)
    train_df = training_results(exp_dirs)
    save_text(train_df.to_csv(index=False), results_dir / TRAINING)
    made = make_plots(df, results, results_dir / "plots")
    if summary_dir is not None:  # the original layout leaves the two CSVs in the project root
        for name in (TRAINING, f"{COMPREHENSIVE}.csv"):
            save_text((results_dir / name).read_text(), Path(summary_dir) / name)
    print_table(df, attacks)
    print(f"\nresults: {results_dir} ({len(results)} experiment(s), {len(made)} plot(s))")
    if logger is not None:
        logger.log_training([load_json(paths.model_dir(Path(e), 0) / paths.SUMMARY) for e in exp_dirs
                             if (paths.model_dir(Path(e), 0) / paths.SUMMARY).exists()])
        logger.log_attacks(df)
        logger.finish()
    return df, failures


def evaluate_study(configs, args, logger=None) -> None:
    """train.py's last stage: every attack on the configurations it trained."""
    from training.experiment import experiment_dir
    from training.trainer import resolve_device

    attacks = args.attacks or list(ATTACKS)
    check_attacks(attacks)
    st = AttackSettings(seed=args.seed, device=str(resolve_device(args.device)))
    _, failures = run_unified([experiment_dir(c) for c in configs], args.results_dir, attacks, args.targets, st,
                              summary_dir=args.summary_dir, logger=logger)
    if failures:
        raise UsageError(f"{len(failures)} evaluation problem(s), listed above; the other results were written")


@cli_main
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs-dir", default="./runs")
    p.add_argument("--results-dir", default="./results")
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), help=f"default: all ({' '.join(ATTACKS)})")
    p.add_argument("--targets", default="0", help="target model index, or 'all' (leave-one-out)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary-dir", default=None, help="also leave training_results.csv and comprehensive_mia_results.csv here")
    args = p.parse_args(argv)
    check_attacks(args.attacks)
    check_targets(args.targets)
    from training.trainer import resolve_device

    st = AttackSettings(seed=args.seed, device=str(resolve_device(args.device)))
    _, failures = run_unified(find_experiment_dirs(args.runs_dir), args.results_dir, args.attacks, args.targets, st,
                              args.summary_dir)
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written to {args.results_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
