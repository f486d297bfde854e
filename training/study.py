"""A study = every (method, sparsity) configuration x every model index, then the evaluation.

plan_study() expands the study flags into resolved ExperimentConfigs; each (config, model index)
is one task, run by an executor from EXECUTORS (local loop here, Ray in training/ray_executor.py).
Every executor calls the same training function, run_task().
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from configs.config import ExperimentConfig
from data import load_dataset
from pruning import PRUNING_METHODS
from training.experiment import check_recipe, pending_models, prepare_experiment, run_model
from training.progress import Progress
from utils.errors import UsageError

METHODS = ("dense", *PRUNING_METHODS)    # every method train.py --methods accepts
DEFAULT_METHODS = ("dense", "static", "dpf")  # the study's comparison (gmp is an extra)


def plan_study(base: ExperimentConfig, methods: list[str], sparsities: list[float]) -> list[ExperimentConfig]:
    """One resolved config per configuration: dense once, each pruning method at each sparsity."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UsageError(f"unknown method {bad[0]!r}; valid: {', '.join(METHODS)}")
    for s in sparsities:
        if not 0 < s < 1:
            raise UsageError(f"sparsity must be in (0, 1), got {s}")
    configs = []
    for m in dict.fromkeys(methods):  # de-duplicated, in the order given
        if m == "dense":
            configs.append(dataclasses.replace(base, prune=False, prune_method=None, sparsity=0.0, name=None))
        else:  # the study-wide --target-epoch/--freeze-epoch reach only the methods that have them
            spec = PRUNING_METHODS[m]
            sched = dict(target_epoch=base.target_epoch if spec.uses_target else None,
                         freeze_epoch=base.freeze_epoch if spec.uses_freeze else None)
            configs += [dataclasses.replace(base, prune=True, prune_method=m, sparsity=s, name=None, **sched)
                        for s in dict.fromkeys(sparsities)]
    return [c.resolved() for c in configs]


@dataclass(frozen=True)
class Task:
    cfg: ExperimentConfig
    index: int

    @property
    def label(self) -> str:
        return f"{self.cfg.name} model {self.index}" + (" (target)" if self.index == 0 else "")


def plan_tasks(configs: list[ExperimentConfig]) -> list[Task]:
    return [Task(c, i) for c in configs for i in pending_models(c)]


_DATASET_CACHE: dict = {}


def _dataset(cfg: ExperimentConfig):
    """Load each dataset once per process (many tasks share it)."""
    key = (cfg.dataset, cfg.data_dir, cfg.data_path, cfg.pool_size)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE[key] = load_dataset(cfg)
    return _DATASET_CACHE[key]


def run_task(task: Task) -> dict:
    """Train one model of one configuration (idempotent preparation of its experiment directory)."""
    ds = _dataset(task.cfg)
    exp, keep = prepare_experiment(task.cfg, ds)
    return run_model(task.cfg, ds, exp, keep, task.index)


def check_recipes(configs: list[ExperimentConfig]) -> None:
    """Refuse up front (before training anything) if a runs directory holds another recipe."""
    for c in configs:
        check_recipe(c)


def run_local(tasks: list[Task], options) -> list[str]:
    """Train tasks one after another in this process. Returns failures (none: errors propagate)."""
    progress = Progress(len(tasks))
    for t in tasks:
        progress.finished(t.label, run_task(t))
    return []


def _run_ray(tasks, options):
    from training.ray_executor import run_ray

    return run_ray(tasks, options)


# Registry: executor name -> function(tasks, options) -> list of failure descriptions
EXECUTORS: dict[str, Callable] = {"local": run_local, "ray": _run_ray}
