#!/usr/bin/env python
"""The whole study in one command: train every configuration (dense; static and DPF at each
sparsity; gmp on request) with its shadow models, then run every attack and write CSVs and plots.

  python train.py --preset quick            # the whole pipeline on embedded digits data, minutes on a CPU
  python train.py                           # the full study: CIFAR-10, 200 epochs, 16 shadows per configuration
  python train.py --skip-existing           # resume an interrupted study: finished models are kept
  python train.py --dry-run                 # list the planned trainings and the disk they need, and exit
  python train.py --executor ray --gpus-per-model 0.25   # one Ray task per pack of models (see README)
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

from artifacts import paths
from configs.config import ExperimentConfig, add_config_args, config_from_args
from configs.evaluation import add_evaluation_args, evaluation_from_args
from defenses import DEFENSES, NONE
from mia.evaluate import resolve_shadows_from
from mia.unified_mia_evaluation import evaluate_study
from training.cost import study_cost
from training.experiment import Task, cached_dataset, disk_per_model, experiment_dir, plan_tasks
from training.study import EXECUTORS, all_methods, check_recipes, default_methods, plan_study
from utils.errors import UsageError, cli_main
from utils.io import format_bytes

# Presets: study-level defaults a user can still override flag by flag. A preset names only what differs from
# the config's defaults (configs/config.py, resnet-20 on cifar10): each value here is a choice of the preset.
# The methods and sparsities of cifar10-cpu are named although they are train.py's defaults today: they are the
# sweep docs/results.md reports, which must not move when a registry entry joins the default comparison.
PRESETS = {
    # Small enough to overfit (100 training images per model, 60 epochs): its dense model leaks clearly
    # (offline LiRA AUC ~0.7 over targets) so the report it builds shows what the tool measures; three
    # targets per configuration keep every attack, the learned ones included, within the 5-minute budget.
    # pack=9: each configuration's 9 models as one packed network. At 8x8 images and batch 32 a CPU step is
    # overhead-bound, so packing pays even on a CPU (2.2x at K = 4, docs/benchmarks.md "Packed training").
    "quick": dict(dataset="digits", pool_size=200, epochs=60, batch_size=32, num_shadows=8,
                  sparsities=[0.9], sens_draws=4, targets="0,1,2", pack=9),
    # The original study's sweep on CIFAR-10 where the dense models fit their data (train accuracy >= 0.9) and
    # leak, finished by 2 CPU cores in under 2.5 hours (docs/results.md; the grid that chose it: docs/benchmarks.md,
    # "The reference regime"). Pool: the first 500 images of CIFAR-10's training split (~240 per model); test:
    # 2,000 images of the test split (500 validate, 1,500 test). lr 0.02 at batch 32: at lr 0.1 a few hundred
    # noisy steps do not fit, and at 60 epochs the dense models reach train accuracy 0.84 only; validation from
    # epoch 75 (the second decay) every 5 epochs: the selected checkpoint is a fitted one, at a twentieth of the
    # validation cost. DPF refreshes every 2 steps: with 700 steps in all, the
    # paper's 16 leaves a handful of large mask swaps that the model cannot repair (docs/pruning.md). Ray, one CPU
    # a model: two single-threaded models at once train 1.6x faster than one on two threads.
    "cifar10-cpu": dict(pool_size=500, test_size=2000, val_fraction=0.25,
                        epochs=100, batch_size=32, lr=0.02, val_from=75, val_every=5, prune_freq=2, num_shadows=8,
                        methods=["dense", "static", "dpf"], sparsities=[0.5, 0.7, 0.8, 0.9, 0.95], targets="all",
                        sens_draws=4, executor="ray", cpus_per_model=1),
}
# Per-configuration fields train.py sets itself.
_PER_CONFIG = {"name", "method", "sparsity", "model_index"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("study")
    g.add_argument("--preset", choices=sorted(PRESETS), help="named defaults: quick = digits, minutes on a CPU; "
                   "cifar10-cpu = the study's sweep on a CIFAR-10 subset where models fit, ~2 h on 2 CPU cores (docs/results.md)")
    g.add_argument("--methods", nargs="+", default=list(default_methods()),
                   help=f"methods to train, of {', '.join(all_methods())} (default: {' '.join(default_methods())})")
    g.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.7, 0.8, 0.9, 0.95],
                   help="sparsities of the pruned methods (dense is trained once)")
    g.add_argument("--defenses", nargs="+", default=None,
                   help=f"defenses, each a configuration beside its undefended one when 'none' is listed, of "
                        f"{', '.join(DEFENSES)} (default: --defense, i.e. none; docs/defenses.md)")
    g.add_argument("--summary-dir", default=".", help="where copies of training_results.csv and "
                   "comprehensive_mia_results.csv are left (the project root, as in the original layout)")
    g.add_argument("--dry-run", action="store_true", help="list the planned trainings and the disk they need, and exit")
    g.add_argument("--no-eval", action="store_true", help="train only; run mia/unified_mia_evaluation.py later")
    g.add_argument("--wandb", action="store_true", help="log configs, per-model metrics and the attack table to wandb")
    g.add_argument("--wandb-project", default="dcil-pytorch")
    g.add_argument("--wandb-entity", default=None)
    g.add_argument("--wandb-tags", nargs="*", default=[])
    e = p.add_argument_group("executor")
    e.add_argument("--executor", choices=sorted(EXECUTORS), default="local", help="local loop or one Ray task per pack of models (--pack; one model with --pack 1)")
    e.add_argument("--ray-address", default=None, help="address of a running Ray cluster (default: start a local one)")
    e.add_argument("--gpus-per-model", type=float, default=None, help="Ray: GPUs per task (one task per pack, --pack); fractional shares a GPU (default: 1 if the cluster has GPUs, else 0)")
    e.add_argument("--cpus-per-model", type=float, default=1, help="Ray: CPUs per model")
    add_evaluation_args(p.add_argument_group("evaluation (configs/evaluation.py)"))
    add_config_args(p.add_argument_group("recipe (every configuration)"), skip=_PER_CONFIG)
    p.set_defaults(num_shadows=16)
    return p


def parse(argv=None):
    p = build_parser()
    args = p.parse_args(argv)
    if args.preset:  # preset values replace defaults, explicit flags still win
        p.set_defaults(**PRESETS[args.preset])
        args = p.parse_args(argv)
    return args


@cli_main
def main(argv=None) -> None:
    args = parse(argv)
    base = config_from_args(args)
    evaluation = evaluation_from_args(args)  # a misspelt attack or target is refused now, not after hours of training
    if args.defenses and base.defense != NONE:
        raise UsageError("give --defense (one defense) or --defenses (a study axis), not both")
    configs = plan_study(base, args.methods, args.sparsities, args.defenses or [base.defense])
    check_recipes(configs)
    if evaluation.shadows_from is not None:
        resolve_shadows_from(evaluation.shadows_from, [c.name for c in configs])
    tasks = plan_tasks(configs)
    skipped = sum(c.num_shadows + 1 for c in configs) - len(tasks)
    print(f"study: {len(configs)} configurations x {base.num_shadows + 1} models = "
          f"{len(tasks) + skipped} trainings ({len(tasks)} to run, {skipped} already complete)")
    if args.dry_run:
        for t in tasks:
            print(f"  would train {t.label} -> {paths.model_dir(experiment_dir(t.cfg), t.index)}")
        counts = Counter(t.cfg.name for t in tasks)
        for line in study_cost(configs, counts, cached_dataset):
            print(line)
        print(disk_line(tasks, base.runs_dir))
        return
    check_data(configs)  # absent data: one line now, not one failure per model
    logger = _wandb(args, configs)
    t0 = time.time()
    failures = EXECUTORS[args.executor](tasks, args)
    if failures:
        raise UsageError(f"{len(failures)} training task(s) failed ({'; '.join(failures)}); "
                         f"fix and re-run with --skip-existing to redo only those")
    print(f"training finished in {time.time() - t0:.0f}s")
    if args.no_eval:
        return
    evaluate_study([experiment_dir(c) for c in configs], evaluation, base.device, base.seed, args.summary_dir, logger,
                   shlex.join(["python", "train.py", *(argv or [])]))


def check_data(configs: list[ExperimentConfig]) -> None:
    """Load each dataset of the study once before anything trains: absent data offline is one line
    (data/datasets.py names the files and where to put them), not a failure per model."""
    for key in {(c.dataset, c.data_dir, c.data_path, c.pool_size, c.test_size): c for c in configs}.values():
        cached_dataset(key)  # the local executor trains from this copy


def disk_line(tasks: list[Task], runs_dir: str) -> str:
    """The disk the models to train will need (training/experiment.disk_per_model: an upper bound, from each
    configuration's parameter count, pool, queries and classes) and what the runs directory's disk has free."""
    try:
        need = {id(t.cfg): disk_per_model(t.cfg, cached_dataset(t.cfg)) for t in tasks}
    except UsageError as e:  # the dataset is not there yet: the plan is still worth printing
        return f"disk: not estimated ({e})"
    total = sum(need[id(t.cfg)] for t in tasks)
    where = next((p for p in Path(runs_dir).absolute().parents if p.exists()), Path("/")) \
        if not Path(runs_dir).exists() else Path(runs_dir)
    return (f"disk: about {format_bytes(total)} for the {len(tasks)} models to train (checkpoints x2, resumable "
            f"state, logits, sensitivity: {', '.join(sorted({format_bytes(v) for v in need.values()}))} per model); "
            f"{format_bytes(shutil.disk_usage(where).free)} free in {runs_dir}")


def _wandb(args, configs):
    if not args.wandb:
        return None
    from utils.wandb_logger import WandbLogger

    return WandbLogger(args, configs)


if __name__ == "__main__":
    main(sys.argv[1:])
