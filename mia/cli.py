"""The one command line of every mia/ script: which runs (a runs directory or one experiment), which
attacks against which targets, where results go. Each script is a few lines over it.
"""
from __future__ import annotations

import argparse

from configs import paths
from mia.attacks import ATTACKS, AttackSettings, check_attacks, suite_attacks
from mia.evaluate import check_targets, evaluate_all, find_experiment_dirs, print_table, write_results
from utils.device import resolve_device
from utils.errors import UsageError


def mia_parser(description: str, default_attacks: list[str], results_help: str, experiment: bool = False,
               summary_dir: bool = False) -> argparse.ArgumentParser:
    """--runs-dir (or --experiment-dir), --results-dir, --attacks, --targets, --device, --seed."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if experiment:
        p.add_argument("--experiment-dir", required=True, help="an experiment directory (holds keep_matrix.npy)")
    else:
        p.add_argument("--runs-dir", default="./runs", help="runs directory (every experiment in it is evaluated)")
    p.add_argument("--results-dir", default="./results", help=results_help)
    p.add_argument("--attacks", nargs="+", default=default_attacks,
                   help=f"attacks to run (default: {' '.join(default_attacks)}); any of: {' '.join(ATTACKS)}")
    p.add_argument("--targets", default="0", help="target model(s): an index, a comma-separated list (0,1,2) or 'all' (leave-one-out; several: mean and std over targets)")
    p.add_argument("--device", default="auto", help="device for attack models: auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random choices (shadow selection, attack models)")
    p.add_argument("--shadows-from", default=None, metavar="CONFIG",
                   help="attack every configuration with the shadows of configuration CONFIG of the same study (a name, "
                        "e.g. dense, or an experiment directory): the attacker who does not mirror the target's "
                        "pipeline; results are named '<experiment>@CONFIG' (default: each configuration's own models)")
    if summary_dir:
        p.add_argument("--summary-dir", default=None,
                       help="also leave training_results.csv and comprehensive_mia_results.csv here")
    return p


def parse(parser: argparse.ArgumentParser, argv=None) -> tuple[argparse.Namespace, AttackSettings]:
    """Parsed and validated arguments with the attack settings they give (the device resolved)."""
    args = parser.parse_args(argv)
    check_attacks(args.attacks)
    check_targets(args.targets)
    return args, settings_for(args.device, args.seed)


def settings_for(device: str = "auto", seed: int = 0) -> AttackSettings:
    """Default settings on a resolved device ('auto': cuda when available)."""
    return AttackSettings(seed=seed, device=str(resolve_device(device)))


def suite_main(suite: str, argv=None, description: str = "") -> None:
    """mia_advanced.py / mia_wemem.py: one suite over every experiment of a runs directory.
    Exit 2 at the end when any experiment or attack failed; the rest is written first."""
    parser = mia_parser(description, suite_attacks(suite), f"results root (this suite writes to <results-dir>/mia/{suite}/)")
    args, st = parse(parser, argv)
    exps = find_experiment_dirs(args.runs_dir)
    out = paths.mia_results_dir(args.results_dir, suite)
    results, failures = evaluate_all(exps, args.attacks, args.targets, st, suite_dir=out, shadows_from=args.shadows_from)
    df = write_results(results, out, f"{suite}_mia_results")
    print_table(df, args.attacks)
    print(f"\n{len(results)} experiment(s) written to {out}")
    if failures:
        raise UsageError(f"{len(failures)} problem(s), listed above; the other results were written to {out}")
