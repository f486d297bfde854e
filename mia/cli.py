"""The one command line of every mia/ script: which runs (a runs directory or one experiment), which
attacks against which targets, where results go. Each script is a few lines over it.
"""
from __future__ import annotations

import argparse

from artifacts import paths
from configs.evaluation import ATTACK_FIELDS, EvaluationConfig, add_evaluation_args, add_seed_alias, evaluation_from_args
from mia.attacks import AttackSettings, suite_attacks
from mia.evaluate import evaluate_all, find_experiment_dirs, print_table, write_results
from utils.errors import UsageError


def mia_parser(description: str, default_attacks: list[str], experiment: bool = False,
               summary_dir: bool = False) -> argparse.ArgumentParser:
    """--runs-dir (or --experiment-dir), --device, and the evaluation flags of configs/evaluation.py
    (--results-dir, --attacks, --targets, --shadows-from, --attack-seed; --seed: its deprecated alias)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if experiment:
        p.add_argument("--experiment-dir", required=True, help="an experiment directory (holds keep_matrix.npy)")
    else:
        p.add_argument("--runs-dir", default="./runs", help="runs directory (every experiment in it is evaluated)")
    p.add_argument("--device", default="auto", help="device for attack models: auto | cpu | cuda | cuda:N")
    add_evaluation_args(p, ("results_dir", *ATTACK_FIELDS), attacks=default_attacks)
    add_seed_alias(p, "attack_seed")
    if summary_dir:
        p.add_argument("--summary-dir", default=None,
                       help="also leave training_results.csv and comprehensive_mia_results.csv here")
    return p


def parse(parser: argparse.ArgumentParser, argv=None) -> tuple[argparse.Namespace, EvaluationConfig, AttackSettings]:
    """Parsed arguments, their validated EvaluationConfig and the attack settings it gives (the device resolved)."""
    args = parser.parse_args(argv)
    cfg = evaluation_from_args(args)
    return args, cfg, cfg.attack_settings(args.device)


def settings_for(device: str = "auto", seed: int = 0) -> AttackSettings:
    """Default settings on a resolved device ('auto': cuda when available)."""
    return EvaluationConfig(attack_seed=seed).attack_settings(device)


def suite_main(suite: str, argv=None, description: str = "") -> None:
    """mia_advanced.py / mia_wemem.py: one suite over every experiment of a runs directory.
    Exit 2 at the end when any experiment or attack failed; the rest is written first."""
    parser = mia_parser(description, suite_attacks(suite))
    args, cfg, st = parse(parser, argv)
    exps = find_experiment_dirs(args.runs_dir)
    out = paths.mia_results_dir(cfg.results_dir, suite)
    results, failures = evaluate_all(exps, cfg.attacks, cfg.targets, st, suite_dir=out, shadows_from=cfg.shadows_from)
    df = write_results(results, out, f"{suite}_mia_results")
    print_table(df, cfg.attacks)
    print(f"\n{len(results)} experiment(s) written to {out}")
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written to {out}")
