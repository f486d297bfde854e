#!/usr/bin/env python
"""Train one configuration: the target model and --num-shadows shadows, each with its signals.

  python run_experiment.py --dataset digits --epochs 5                         # dense, runs/dense/digits/
  python run_experiment.py --name dpf_90 --prune --prune-method dpf --sparsity 0.9
  python run_experiment.py --dataset digits --num-shadows 8 --model-index 3    # only shadow 3

Outputs (see artifacts/paths.py and README): <runs-dir>/<method>/sparsity_<s>/<dataset>/.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from configs.config import ExperimentConfig, add_config_args, config_from_args
from data import load_dataset
from training.experiment import (Task, experiment_dir, model_indices, pending_models, plan_packs, prepare_experiment,
                                 run_pack)
from training.sources import missing_sources, source_config
from training.progress import Progress
from utils.errors import DivergenceError, UsageError, cli_main


def parse_config(argv=None) -> ExperimentConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    return config_from_args(parser.parse_args(argv)).resolved()


def train_sources(cfg: ExperimentConfig) -> frozenset:
    """A fine-tuned configuration starts from dense model i of its study: train the missing ones first
    (--no-train-source: refuse, naming them). Returns the source models trained here."""
    src, missing = source_config(cfg), missing_sources(cfg, model_indices(cfg))
    if not missing:
        return frozenset()
    if not cfg.train_source:
        raise UsageError(f"{cfg.name} starts from {src.name} model(s) {', '.join(map(str, missing))} in "
                         f"{experiment_dir(src)}, not trained; train them first or drop --no-train-source")
    print(f"{cfg.name} starts from {src.name} model(s) {', '.join(map(str, missing))}: training them first")
    # the source configuration's own run, over the same models (complete ones skipped), packed as asked
    run(dataclasses.replace(src, model_index=cfg.model_index, skip_existing=True, pack=cfg.pack,
                            pack_mode=cfg.pack_mode, device=cfg.device, compile=cfg.compile, verbose=cfg.verbose))
    return frozenset(missing)


def run(cfg: ExperimentConfig) -> list[dict]:
    """Train every pending model of one configuration; returns their summaries."""
    retrained = train_sources(cfg)
    ds = load_dataset(cfg)
    exp, keep = prepare_experiment(cfg, ds)
    todo = pending_models(cfg, retrained)
    progress = Progress(len(todo), f"models of {cfg.name}")
    summaries, failed = [], []
    for pack in plan_packs([Task(cfg, i) for i in todo]):  # --pack models at once (docs/packing.md)
        try:
            done = run_pack(cfg, ds, exp, keep, list(pack.indices))
        except DivergenceError as e:  # the other packs go on; the run ends with the list
            failed.append(str(e))
            done = e.finished
        progress.finished([(pack.model_label(s["model_index"]), s) for s in done])
        summaries += done
    print(f"{cfg.name}: {len(summaries)} model(s) trained, {len(keep) - len(todo) if cfg.model_index is None else 0} skipped -> {exp}")
    if failed:
        raise DivergenceError(f"{len(todo) - len(summaries)} model(s) failed: {'; '.join(failed)}", finished=summaries)
    return summaries


@cli_main
def main(argv=None) -> None:
    run(parse_config(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
