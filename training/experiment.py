"""One configuration = one experiment directory: the target (model 0) and its shadows.

prepare_experiment() writes the experiment-wide artifacts (config, keep matrix, pool labels) and
refuses to mix models trained with different recipes; run_model() trains one model and writes, in
order, config -> checkpoints -> summary -> keep.npy -> signals -> COMPLETE (last, so a directory
without it is partial and gets redone). Every executor (local loop, Ray) calls run_model().
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs import paths
from configs.config import ExperimentConfig
from data import ArrayDataset, load_dataset
from pruning.methods import former_meaning
from training.membership import keep_matrix
from training.signals import write_signals
from training.trainer import train_model
from utils.device import resolve_device
from utils.errors import UsageError
from utils.io import load_json, load_npy, save_json, save_npy, save_text


def experiment_dir(cfg: ExperimentConfig) -> Path:
    return paths.experiment_dir(cfg.runs_dir, cfg.method, cfg.sparsity, cfg.dataset)


def stored_recipe(cfg_file: Path) -> dict:
    """The recipe recorded in a config.json. Files written before methods had revisions lack the
    field: they hold revision 1 of their method (for static: gradual magnitude pruning, now gmp)."""
    stored = load_json(cfg_file)
    return {**ExperimentConfig.from_dict(stored).recipe(), "method_revision": stored.get("method_revision", 1)}


def recipe_diff(stored: dict, cfg: ExperimentConfig) -> list[str]:
    new = cfg.recipe()
    diff = [f"{k}: {stored.get(k)!r} there vs {new.get(k)!r} asked"
            for k in sorted(set(stored) | set(new)) if stored.get(k) != new.get(k)]
    former = former_meaning(cfg.method, stored.get("method_revision"))
    if former and stored.get("method_revision") != new.get("method_revision"):
        diff.insert(0, f"its models were trained when '{cfg.method}' meant {former}")
    return diff


def check_recipe(cfg: ExperimentConfig) -> None:
    """Refuse to mix models of different recipes in one experiment directory (names the fields)."""
    exp = experiment_dir(cfg)
    if (exp / paths.CONFIG).exists():
        diff = recipe_diff(stored_recipe(exp / paths.CONFIG), cfg)
        if diff:
            raise UsageError(f"{exp} holds models of a different recipe ({'; '.join(diff)}); "
                             f"use another --runs-dir or remove that directory")


def prepare_experiment(cfg: ExperimentConfig, ds: ArrayDataset) -> tuple[Path, np.ndarray]:
    """Create (or reuse, if the recipe matches) the experiment directory; return it and the keep matrix."""
    check_recipe(cfg)
    exp = experiment_dir(cfg)
    cfg_file = exp / paths.CONFIG
    keep = keep_matrix(cfg.num_shadows + 1, len(ds.y_train), cfg.mia_seed)
    km_file = exp / paths.KEEP_MATRIX
    if km_file.exists() and not np.array_equal(load_npy(km_file), keep):
        raise UsageError(f"{km_file} differs from the keep matrix of this recipe; remove the directory to retrain")
    save_json(_with_index(cfg, None).to_dict(), cfg_file)
    save_npy(keep, km_file)
    save_npy(ds.y_train, exp / paths.LABELS)
    return exp, keep


def _with_index(cfg: ExperimentConfig, index: int | None) -> ExperimentConfig:
    import dataclasses

    return dataclasses.replace(cfg, model_index=index)


def is_complete(model_dir: Path) -> bool:
    return (Path(model_dir) / paths.COMPLETE).exists()


def run_model(cfg: ExperimentConfig, ds: ArrayDataset, exp: Path, keep: np.ndarray, index: int) -> dict:
    """Train model `index` on pool[keep[index]], then write its signals and the COMPLETE marker."""
    out = paths.model_dir(exp, index)
    (out / paths.COMPLETE).unlink(missing_ok=True)  # retraining: the directory is partial until the end
    mcfg = _with_index(cfg, index)
    if index:  # the target's config.json is the experiment's
        save_json(mcfg.to_dict(), out / paths.CONFIG)
    summary, model = train_model(mcfg, ds, keep[index], out, index)
    save_npy(keep[index], out / paths.KEEP)  # the membership this run actually used
    write_signals(model, cfg, ds, out, resolve_device(cfg.device), index)
    save_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n", out / paths.COMPLETE)
    return summary


def model_indices(cfg: ExperimentConfig) -> list[int]:
    return [cfg.model_index] if cfg.model_index is not None else list(range(cfg.num_shadows + 1))


def pending_models(cfg: ExperimentConfig) -> list[int]:
    """Model indices this run will train (complete ones are skipped with --skip-existing)."""
    exp = experiment_dir(cfg)
    return [i for i in model_indices(cfg)
            if not (cfg.skip_existing and is_complete(paths.model_dir(exp, i)))]


@dataclass(frozen=True)
class Task:
    """One model of one configuration: the unit every executor (local loop, Ray) runs."""
    cfg: ExperimentConfig
    index: int

    @property
    def label(self) -> str:
        return f"{self.cfg.name} model {self.index}" + (" (target)" if self.index == 0 else "")


def plan_tasks(configs: list[ExperimentConfig]) -> list[Task]:
    return [Task(c, i) for c in configs for i in pending_models(c)]


_DATASET_CACHE: dict = {}


def _dataset(cfg: ExperimentConfig) -> ArrayDataset:
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
