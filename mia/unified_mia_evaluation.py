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
  mia/unified/scores/<experiment>/          every attack's per-example scores per target (artifacts/paths.py)
  attack_intervals.csv, paired_comparisons.csv, per_class_auc.csv, plots/per_class_auc.png   (mia/compare.py)
  report.md                                 the study in one page (analysis/report.py)
Points below the FPR floor are drawn hollow (privacy-utility) or not at all (ROC).
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pandas as pd

from artifacts import paths
from analysis import report
from artifacts.rundir import finished_model_dirs, read_model_record
from mia.attacks import ATTACKS, AttackSettings
from analysis.compare import run_comparisons
from configs.evaluation import COMPARE_FIELDS, EvaluationConfig, add_evaluation_args
from mia.cli import mia_parser, parse
from artifacts.schema import experiment_id
from mia.evaluate import evaluate_all, find_experiment_dirs, print_table, write_results
from utils.errors import UsageError, cli_main
from utils.io import save_text

TRAINING_COLS = ["experiment", "method", "sparsity", "dataset", "arch", "layers", "model_index", "num_train",
                 "train_acc", "test_acc", "val_acc", "train_loss", "test_loss", "best_epoch", "epochs",
                 "wall_time_s", "images_per_s", "target_sparsity", "measured_sparsity", "sparsity_all_params", "device",
                 "at_chance"]


def training_results(exp_dirs: list[Path]) -> pd.DataFrame:
    """One row per finished model: its recipe joined with its measurements (artifacts.model_record)."""
    rows = [read_model_record(exp, d) for exp in exp_dirs for d in finished_model_dirs(exp)]
    return pd.DataFrame([{k: r.get(k) for k in TRAINING_COLS} for r in rows], columns=TRAINING_COLS)


def copy_tables(src: Path, dst: Path, names: list[str]) -> None:
    """Atomic copies of written tables (a reader never sees half a CSV)."""
    for name in names:
        save_text((src / name).read_text(), dst / name)


def run_unified(exp_dirs: list[Path], cfg: EvaluationConfig, st: AttackSettings, summary_dir=None, logger=None,
                commands: list[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """Evaluate (cfg: which attacks, targets, shadows; st: the attack settings), write CSVs/JSON/scores,
    compare the configurations (analysis/compare.py), draw the figures and write report.md
    (analysis/report.py); returns the wide table and the problems met (already printed).
    `commands` (what was run) go into the report's "Reproduce" section."""
    attacks = cfg.attacks or list(ATTACKS)
    results_dir = Path(cfg.results_dir)
    unified = paths.mia_results_dir(results_dir, "unified")
    results, failures = evaluate_all(exp_dirs, attacks, cfg.targets, st, suite_dir=unified, shadows_from=cfg.shadows_from)
    df = write_results(results, unified, paths.COMPREHENSIVE)
    training = training_results(exp_dirs)
    save_text(training.to_csv(index=False), unified / paths.TRAINING_RESULTS)
    # the tables also at the results root and, in the original layout, the two main ones in the project root
    copy_tables(unified, results_dir, [f"{paths.COMPREHENSIVE}.csv", f"{paths.COMPREHENSIVE}_long.csv", paths.TRAINING_RESULTS])
    if summary_dir is not None:
        copy_tables(unified, Path(summary_dir), [paths.TRAINING_RESULTS, f"{paths.COMPREHENSIVE}.csv"])
    print_table(df, attacks)
    if results:  # the experiments just evaluated, not older ones the directory may hold
        study = run_comparisons(results_dir, cfg.pairs, cfg.compare_settings(st.seed),
                                only=[experiment_id(r) for r in results])
        failures += study.failures
        out = report.build(results_dir, df, training, results, study, list(commands))
        print(report.summary_line(study, out))
    print(f"\nresults: {results_dir} ({len(results)} experiment(s))")
    if logger is not None:
        logger.log_training([read_model_record(e, d) for e in exp_dirs for d in finished_model_dirs(e)])
        logger.log_attacks(df)
        logger.finish()
    return df, failures


def evaluate_study(exp_dirs: list[Path], cfg: EvaluationConfig, device: str, training_seed: int, summary_dir=None,
                   logger=None, command: str = "python train.py") -> None:
    """train.py's last stage: every attack on the configurations it trained, on its device; the attack
    seed defaults to its training seed."""
    _, failures = run_unified(exp_dirs, cfg, cfg.attack_settings(device, training_seed), summary_dir=summary_dir,
                              logger=logger, commands=[command])
    if failures:
        raise UsageError(f"{len(failures)} evaluation problem(s), listed above; the other results were written")


@cli_main
def main(argv=None) -> None:
    parser = mia_parser(__doc__, list(ATTACKS), summary_dir=True)
    add_evaluation_args(parser, COMPARE_FIELDS)
    args, cfg, st = parse(parser, argv)
    _, failures = run_unified(find_experiment_dirs(args.runs_dir), cfg, st, args.summary_dir,
                              commands=[shlex.join(["python", "mia/unified_mia_evaluation.py", *(argv or [])])])
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written to {cfg.results_dir}")


if __name__ == "__main__":
    main(sys.argv[1:])
