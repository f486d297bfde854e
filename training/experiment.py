"""One configuration = one experiment directory: the target (model 0) and its shadows.

prepare_experiment() writes the experiment-wide artifacts (config, keep matrix, pool labels) and
refuses to mix models trained with different recipes; run_pack() trains a pack of models (one, or
several at once as one packed network: docs/packing.md) and writes, for each model in order, config ->
checkpoints -> summary -> keep.npy -> signals (their content hashes into the summary) -> COMPLETE (last, so
a directory without it is partial and gets redone; a pack killed mid-way loses only its own models). A
model whose numbers stop being finite gets no COMPLETE (DivergenceError, after the pack's other models
are written); a write the system refuses names the space a model needs (disk_per_model). Every executor
(local loop, Ray) runs packs through run_pack_task().
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from artifacts import paths
from configs.config import ExperimentConfig, recipe_diff
from data import ArrayDataset, load_dataset
from training.membership import keep_matrix
from training.signals import write_signals
from training.sources import load_rewind, load_source, rewinds, source_config, stale_reason
from training.packing import auto_pack
from training.trainer import train_models
from utils.device import resolve_device
from utils.errors import DivergenceError, UsageError, WriteError
from utils.io import format_bytes, load_json, load_npy, save_json, save_npy, save_text


def experiment_dir(cfg: ExperimentConfig) -> Path:
    return paths.experiment_dir(cfg.runs_dir, cfg.method, cfg.sparsity, cfg.dataset, cfg.defense)


def stored_recipe(cfg_file: Path) -> dict:
    """The recipe recorded in a config.json. Files written before methods had revisions lack the
    field: they hold revision 1 of their method (for static: gradual magnitude pruning, now gmp)."""
    stored = load_json(cfg_file)
    return {**ExperimentConfig.from_dict(stored).recipe(), "method_revision": stored.get("method_revision", 1)}


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


def run_pack(cfg: ExperimentConfig, ds: ArrayDataset, exp: Path, keep: np.ndarray, indices: list[int]) -> list[dict]:
    """Train models `indices` together (each on pool[keep[i]], every model of the configuration the same
    steps per epoch), then write each one's signals and COMPLETE marker. Returns their summaries; when some
    diverged, raises DivergenceError (their lines, the others' summaries) once the others are complete. A
    write refused for lack of space says what a model of this configuration needs."""
    try:
        return _run_pack(cfg, ds, exp, keep, indices)
    except WriteError as e:
        if not e.no_space:
            raise
        raise WriteError(f"{e}; a model of {cfg.name} needs about {format_bytes(disk_per_model(cfg, ds))} "
                         f"(train.py --dry-run states the study's)", no_space=True) from None


def _run_pack(cfg: ExperimentConfig, ds: ArrayDataset, exp: Path, keep: np.ndarray, indices: list[int]) -> list[dict]:
    outs = [paths.model_dir(exp, i) for i in indices]
    for i, out in zip(indices, outs):
        (out / paths.COMPLETE).unlink(missing_ok=True)  # retraining: the directory is partial until the end
        if not cfg.skip_existing:  # a run without --skip-existing trains from the start; with it, a killed
            (out / paths.RESUME).unlink(missing_ok=True)  # model resumes from its last state (training/resume.py)
            (out / paths.REWIND).unlink(missing_ok=True)  # and a dense model keeps the rewind points of this run
        if i:  # the target's config.json is the experiment's
            save_json(_with_index(cfg, i).to_dict(), out / paths.CONFIG)
    sources = {i: load_source(cfg, i) for i in indices} if source_config(cfg) else {}  # fine-tuning: dense model i
    points = {i: load_rewind(cfg, i) for i in indices} if rewinds(cfg) else {}  # lth: its rewind point
    for i, (_, record) in points.items():
        sources[i][1]["rewind"] = record  # recorded beside the source: a resumable state of another one is refused
    trained = train_models(cfg, ds, keep, list(indices), outs, sources=sources,  # steps: config_steps(keep), the same for every pack
                           rewinds={i: state for i, (state, _) in points.items()})
    device = resolve_device(cfg.device)
    summaries, failed = [], []
    for i, out, got in zip(indices, outs, trained):
        if isinstance(got, DivergenceError):  # diverged in training: nothing written, its resumable state stays
            failed.append(str(got))
            continue
        summary, model = got
        save_npy(keep[i], out / paths.KEEP)  # the membership this run actually used
        try:
            write_signals(model, cfg, ds, out, device, i)  # refuses non-finite signals
        except DivergenceError as e:
            tqdm.write(f"error: {e}")
            failed.append(str(e))
            continue
        save_text(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n", out / paths.COMPLETE)
        (out / paths.RESUME).unlink(missing_ok=True)  # complete: nothing left to resume
        summaries.append(load_json(out / paths.SUMMARY))  # with the signals' content hashes (write_signals)
    if failed:
        raise DivergenceError("; ".join(failed), finished=summaries)
    return summaries


def disk_per_model(cfg: ExperimentConfig, ds: ArrayDataset) -> int:
    """Bytes one model of `cfg` needs at most, an estimate from its parameter count P (float32), the pool,
    queries and classes: two checkpoints (4P each, + P for a pruned model's masks), the resumable state
    (weights, momentum, best snapshot: 12P; a pruned model's masks and DPF's dense weights: + 6P),
    logits and sensitivity (float32), a dense model's rewind points (4P each: pruning/iterative.REWIND_EPOCHS),
    and the atomic write's temp copy of the largest file beside the old one."""
    import torch

    from models import build_model, count_params

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        p = count_params(build_model(cfg.arch, cfg.layers, cfg.width_factor, ds.num_classes, ds.in_channels))
    from pruning import PRUNING_METHODS

    pruned = PRUNING_METHODS[cfg.method].prunes
    checkpoint = (4 + pruned) * p
    state = (12 + 6 * pruned) * p
    pool = len(ds.y_train)
    logits, sens = 4 * pool * cfg.mia_queries * ds.num_classes, 4 * pool * ds.num_classes
    from pruning.iterative import REWIND_EPOCHS

    rewind = 0 if pruned else 4 * p * len(REWIND_EPOCHS)
    return int(2 * checkpoint + state + logits + sens + rewind + max(state, logits, rewind))


def model_indices(cfg: ExperimentConfig) -> list[int]:
    return [cfg.model_index] if cfg.model_index is not None else list(range(cfg.num_shadows + 1))


def pending_models(cfg: ExperimentConfig, retrained_sources=frozenset()) -> list[int]:
    """Model indices this run will train: complete ones are skipped with --skip-existing, unless the model
    they were fine-tuned from changed or is retrained in this run (retrained_sources: its indices), so a
    stale fine-tuned model is never reused (training/sources.py)."""
    exp = experiment_dir(cfg)
    return [i for i in model_indices(cfg)
            if not (cfg.skip_existing and is_complete(paths.model_dir(exp, i)) and not stale(cfg, i, retrained_sources))]


def stale(cfg: ExperimentConfig, index: int, retrained_sources) -> bool:
    why = f"its source model {index} is retrained in this run" if index in retrained_sources else \
        stale_reason(cfg, index, paths.model_dir(experiment_dir(cfg), index))
    if why:
        print(f"{cfg.name} model {index} is stale ({why}): fine-tuned again")
    return why is not None


@dataclass(frozen=True)
class Task:
    """One model of one configuration: what train.py plans, lists and counts."""
    cfg: ExperimentConfig
    index: int

    @property
    def label(self) -> str:
        return f"{self.cfg.name} model {self.index}" + (" (target)" if self.index == 0 else "")


def plan_tasks(configs: list[ExperimentConfig]) -> list[Task]:
    """The pending models of every configuration, in the given order (sources first: training/study.py)."""
    tasks, pending = [], {}
    for c in configs:
        src = source_config(c)
        todo = pending_models(c, pending.get(experiment_dir(src), frozenset()) if src else frozenset())
        pending[experiment_dir(c)] = frozenset(todo)
        tasks += [Task(c, i) for i in todo]
    return tasks


@dataclass(frozen=True)
class Pack:
    """Models of one configuration trained at once: the unit every executor (local loop, Ray) runs."""
    cfg: ExperimentConfig
    indices: tuple[int, ...]

    @property
    def label(self) -> str:
        if len(self.indices) == 1:
            return Task(self.cfg, self.indices[0]).label
        return f"{self.cfg.name} models {', '.join(map(str, self.indices))} (packed)"

    def model_label(self, index: int) -> str:
        return Task(self.cfg, index).label


def pack_size(cfg: ExperimentConfig) -> int:
    """--pack, or when not given 1 on CPU and, on CUDA, what fits in the free memory (training/packing.py)."""
    return auto_pack(cfg, resolve_device(cfg.device))


def plan_packs(tasks: list[Task]) -> list[Pack]:
    """The pending models of each configuration, in order, at most K at a time (K = pack_size) in as few
    packs as that allows, of sizes as equal as possible (17 models, K = 16: 9 and 8, not 16 and a lone
    one). Resume is at pack granularity: complete models are not planned, so a partial pack's missing
    models are packed anew."""
    by_config: dict[int, list[Task]] = {}
    for t in tasks:
        by_config.setdefault(id(t.cfg), []).append(t)
    packs = []
    for group in by_config.values():
        cfg, idx = group[0].cfg, [t.index for t in group]
        n = -(-len(idx) // pack_size(cfg))  # as few packs as K allows, their sizes as equal as possible
        sizes = [len(idx) // n + (j < len(idx) % n) for j in range(n)]
        starts = np.cumsum([0] + sizes)
        packs += [Pack(cfg, tuple(idx[a:b])) for a, b in zip(starts, starts[1:])]
    return packs


_DATASET_CACHE: dict = {}


def cached_dataset(cfg: ExperimentConfig) -> ArrayDataset:
    """Load each dataset once per process (many tasks share it)."""
    key = (cfg.dataset, cfg.data_dir, cfg.data_path, cfg.pool_size, cfg.test_size)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE[key] = load_dataset(cfg)
    return _DATASET_CACHE[key]


def run_pack_task(pack: Pack) -> list[dict]:
    """Train one pack of one configuration (idempotent preparation of its experiment directory)."""
    ds = cached_dataset(pack.cfg)
    exp, keep = prepare_experiment(pack.cfg, ds)
    return run_pack(pack.cfg, ds, exp, keep, list(pack.indices))
