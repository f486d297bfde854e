"""Load an experiment's signals (layout: artifacts/paths.py) for the attacks.

Only complete models (COMPLETE marker) are used. Per-model arrays stay memory-mapped float32
(a ModelStack), so N = 50,000, 17 models, 18 queries and 100 classes (6 GB of logits) need not fit
in memory: the attacks read them model by model.

What is read is what training wrote, and only numbers: a signals file whose content hash differs from
the one its summary records (edited, partially copied, bit rot) is stale, and an array holding a NaN or
an infinity is refused, each with one line naming the file (benchmarks/integrity_cost.py measures both).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from artifacts import paths
from utils.errors import UsageError
from utils.io import count_nonfinite, file_digest, load_json, load_npy


class ModelStack(Sequence):
    """Per-model arrays of one shape seen as [M, ...]: stack[i] is model i's array, stack[list]
    a sub-stack; np.asarray(stack) materialises it."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = list(arrays)

    @property
    def shape(self) -> tuple:
        return (len(self.arrays),) + tuple(self.arrays[0].shape)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            return self.arrays[i]
        if isinstance(i, slice):
            return ModelStack(self.arrays[i])
        return ModelStack([self.arrays[j] for j in np.asarray(i).tolist()])

    def __array__(self, dtype=None, copy=None):
        return np.stack(self.arrays).astype(dtype or self.arrays[0].dtype, copy=False)


@dataclass
class Signals:
    exp_dir: Path
    config: dict
    indices: list[int]              # model indices of the complete models, ascending; row r is model indices[r]
    logits: ModelStack              # [M, N, Q, C] float32
    sensitivity: ModelStack | None  # [M, N, C] float32, None unless every complete model has it
    keep: np.ndarray                # [M, N] bool: rows of keep_matrix.npy for `indices`
    labels: np.ndarray              # [N] int64
    summaries: dict[int, dict]      # model_record (config joined with experiment_summary.json) per model index

    def row(self, model_index: int) -> int:
        return self.indices.index(model_index)


def stale_signals(model_dir: Path, num_queries: int | None, need_sensitivity: bool = False) -> str | None:
    """Why a model's signals cannot be used (missing, older than its checkpoint, not the file training wrote:
    another content hash than its summary records, another query count), or None. A missing sensitivity.npy
    only matters where asked (SAMIA names it itself). A summary that records no hashes (written before
    they were recorded, docs/run_directory.md) has its signals read unchecked."""
    ck = model_dir / paths.BEST_MODEL
    names = [paths.LOGITS] + ([paths.SENSITIVITY] if need_sensitivity or (model_dir / paths.SENSITIVITY).exists() else [])
    for name in names:
        f = model_dir / name
        if not f.exists():
            return f"{name} missing"
        if ck.exists() and f.stat().st_mtime < ck.stat().st_mtime:
            return f"{name} older than {paths.BEST_MODEL}"
    digests = recorded_digests(model_dir)
    for name in names:
        if name in digests and file_digest(model_dir / name, digests[name].partition(":")[0]) != digests[name]:
            return (f"{name} is not the file its training wrote (its content hash differs from the one in "
                    f"{paths.SUMMARY}: edited, partially copied or corrupted)")
    queries = load_npy(model_dir / paths.LOGITS, mmap=True).shape[1:2]
    if num_queries is not None and queries != (num_queries,):
        return f"{paths.LOGITS} has {queries[0] if queries else 0} queries, its config asks for {num_queries}"
    return None


def recorded_digests(model_dir: Path) -> dict[str, str]:
    """File name -> content hash recorded in a model's summary at training (training/signals.record_digests)."""
    summary = Path(model_dir) / paths.SUMMARY
    return load_json(summary).get("digests", {}) if summary.exists() else {}


def check_finite(f: Path, arr: np.ndarray) -> None:
    """Refuse an array holding NaN or inf, naming the file and how many entries (a diverged model's signals
    from before they were refused at training, or a corrupted file): nothing is scored from it."""
    bad = count_nonfinite(arr)
    if bad:
        raise UsageError(f"{f}: {bad} of {arr.size} entries are not finite (NaN or inf); retrain that model "
                         f"(delete its {paths.COMPLETE} marker, re-run with --skip-existing)")


def finished_indices(exp: Path, num_models: int) -> list[int]:
    """Indices of the models of an experiment that have their COMPLETE marker, ascending."""
    return [i for i in range(num_models) if (paths.model_dir(exp, i) / paths.COMPLETE).exists()]


def finished_model_dirs(exp: Path) -> list[Path]:
    """Directories of the finished models of an experiment, by model index."""
    n = len(load_npy(Path(exp) / paths.KEEP_MATRIX, mmap=True))
    return [paths.model_dir(exp, i) for i in finished_indices(exp, n)]


def arch_label(config: dict) -> str | None:
    """'resnet-20', 'wideresnet-28' (width k in the config): the one way every table names an arch."""
    arch, layers = config.get("arch"), config.get("layers")
    return f"{arch}-{layers}" if arch and layers else arch


def model_record(config: dict, summary: dict) -> dict:
    """One model as every table shows it: the recipe from config.json (sparsity = the requested one)
    joined with the measurements of experiment_summary.json (measured_sparsity). An older summary that
    holds recipe fields and the measured value as 'sparsity' (docs/run_directory.md) reads the same."""
    measured = summary.get("measured_sparsity", summary.get("sparsity"))
    return {"experiment": config.get("name"), "method": config.get("method"), "sparsity": config.get("sparsity"),
            "target_sparsity": config.get("sparsity"), "dataset": config.get("dataset"), "arch": arch_label(config),
            "layers": config.get("layers"), "epochs": config.get("epochs"),
            **{k: v for k, v in summary.items() if k not in RECIPE_IN_OLD_SUMMARIES},
            "measured_sparsity": measured}


def read_model_record(exp: Path, model_dir: Path) -> dict:
    """model_record of one model directory (a shadow's own config.json, the target's is the experiment's)."""
    cfg = model_dir / paths.CONFIG if (model_dir / paths.CONFIG).exists() else Path(exp) / paths.CONFIG
    summary = model_dir / paths.SUMMARY
    return model_record(load_json(cfg), load_json(summary) if summary.exists() else {})


# keys an old summary repeated from the recipe (the config is the source for them)
RECIPE_IN_OLD_SUMMARIES = {"name", "method", "sparsity", "target_sparsity", "dataset", "arch", "layers", "width_factor",
                           "epochs", "prune_method", "prune_freq", "target_epoch", "freeze_epoch"}


def current_config(d: dict) -> dict:
    """A recorded config (config.json, a checkpoint's config, a resumable state's recipe) in today's keys: the
    method recorded as `prune` (bool) and `prune_method` (None for dense) becomes the one `method` field
    (docs/run_directory.md, "Older config formats"). A config that records no method, or two that disagree,
    was not written by this pipeline: refused with one line."""
    if "prune" not in d and "prune_method" not in d:
        if "method" not in d:
            raise UsageError("a recorded config without a method (neither 'method' nor 'prune'/'prune_method'): "
                             "not written by this pipeline; retrain that configuration")
        return d
    method = d.get("prune_method") if d.get("prune") else "dense"
    if method is None or d.get("method", method) != method:
        raise UsageError(f"a recorded config whose method fields disagree (prune {d.get('prune')!r}, prune_method "
                         f"{d.get('prune_method')!r}, method {d.get('method')!r}); retrain that configuration")
    return {**{k: v for k, v in d.items() if k not in ("prune", "prune_method")}, "method": method}


def _load_keep_and_labels(exp: Path) -> tuple[np.ndarray, np.ndarray]:
    keep, labels = load_npy(exp / paths.KEEP_MATRIX), load_npy(exp / paths.LABELS)
    if keep.dtype != bool or keep.ndim != 2 or labels.ndim != 1 or labels.shape[0] != keep.shape[1]:
        raise UsageError(f"{exp}: {paths.KEEP_MATRIX} {keep.shape} {keep.dtype} and {paths.LABELS} {labels.shape} "
                         f"do not match (expected bool [models, pool] and [pool])")
    return keep, labels.astype(np.int64)


def same_membership(keep_a, labels_a, keep_b, labels_b) -> bool:
    """The pairing rule of a study (docs/protocol.md): two configurations' models are paired when model i of both
    trained on the same examples, i.e. equal keep rows (whole matrices or single rows) over equal pool labels;
    another --mia-seed, pool or number of models breaks it. Every paired comparison checks this, and only this."""
    return np.array_equal(keep_a, keep_b) and np.array_equal(labels_a, labels_b)


def same_study(exp_a: str | Path, exp_b: str | Path) -> bool:
    """same_membership of two experiment directories (their keep matrices and pool labels)."""
    return same_membership(*_load_keep_and_labels(Path(exp_a)), *_load_keep_and_labels(Path(exp_b)))


def _check_shape(f: Path, arr: np.ndarray, expected: tuple, what: str) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise UsageError(f"{f} has shape {tuple(arr.shape)}, expected {tuple(expected)} ({what})")


def load_experiment(exp_dir: str | Path) -> Signals:
    """Signals of every complete model of one experiment, validated against each other."""
    exp = Path(exp_dir)
    if not (exp / paths.KEEP_MATRIX).exists():
        raise UsageError(f"{exp} is not an experiment directory (no {paths.KEEP_MATRIX})")
    config = load_json(exp / paths.CONFIG)
    keep_all, labels = _load_keep_and_labels(exp)
    n = len(labels)
    indices = finished_indices(exp, len(keep_all))
    if not indices:
        raise UsageError(f"{exp}: no finished model (no {paths.COMPLETE} marker); train it first")
    logits, sens, summaries = [], [], {}
    for i in indices:
        d = paths.model_dir(exp, i)
        why = stale_signals(d, None)  # a query-count mismatch is named below, with both shapes
        if why:  # mia/ only reads: the training side computes signals (it has the models)
            raise UsageError(f"{d}: {why}; recompute the signals with: python -m training.signals {exp}")
        keep = load_npy(d / paths.KEEP)
        if keep.shape != (n,) or not np.array_equal(keep, keep_all[i]):
            raise UsageError(f"{d / paths.KEEP} differs from row {i} of {exp / paths.KEEP_MATRIX}")
        lg = load_npy(d / paths.LOGITS, mmap=True)
        if lg.ndim != 3:
            raise UsageError(f"{d / paths.LOGITS} has shape {lg.shape}, expected [pool, queries, classes]")
        expected = logits[0].shape if logits else (n,) + tuple(lg.shape[1:])
        _check_shape(d / paths.LOGITS, lg, expected, f"[pool {n}, queries, classes] as model {indices[0]}")
        check_finite(d / paths.LOGITS, lg)
        logits.append(lg.astype(np.float32, copy=False))
        if (d / paths.SENSITIVITY).exists():
            s = load_npy(d / paths.SENSITIVITY, mmap=True)
            _check_shape(d / paths.SENSITIVITY, s, (n, lg.shape[2]), "[pool, classes]")
            check_finite(d / paths.SENSITIVITY, s)
            sens.append(s.astype(np.float32, copy=False))
        summaries[i] = read_model_record(exp, d)
    if labels.min() < 0 or labels.max() >= logits[0].shape[2]:
        raise UsageError(f"{exp / paths.LABELS}: labels outside 0..{logits[0].shape[2] - 1} (the logits' classes)")
    return Signals(exp, config, indices, ModelStack(logits), ModelStack(sens) if len(sens) == len(indices) else None,
                   keep_all[indices], labels, summaries)
