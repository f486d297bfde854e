"""Load an experiment's signals (layout: configs/paths.py) for the attacks.

Only complete models (COMPLETE marker) are used. Per-model arrays stay memory-mapped float32
(a ModelStack), so N = 50,000, 17 models, 18 queries and 100 classes (6 GB of logits) need not fit
in memory: the attacks read them model by model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from configs import paths
from utils.errors import UsageError
from utils.io import load_json, load_npy


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
    summaries: dict[int, dict]      # experiment_summary.json per model index ({} when absent)

    def row(self, model_index: int) -> int:
        return self.indices.index(model_index)


def _stale(model_dir: Path, name: str) -> bool:
    """Missing, or older than the checkpoint it was computed from."""
    f, ck = model_dir / name, model_dir / paths.BEST_MODEL
    return not f.exists() or (ck.exists() and f.stat().st_mtime < ck.stat().st_mtime)


def ensure_signals(model_dir: Path) -> None:
    """THE hook for missing or stale signals: recompute them from the model's checkpoint with
    mia.signals.ensure_signals when that is available (a missing sensitivity.npy is recomputed only
    when a checkpoint exists; without one SAMIA alone is skipped)."""
    has_checkpoint = (model_dir / paths.BEST_MODEL).exists()
    if not (_stale(model_dir, paths.LOGITS) or (_stale(model_dir, paths.SENSITIVITY) and has_checkpoint)):
        return
    try:
        from mia.signals import ensure_signals as recompute
    except ImportError:
        recompute = None
    if recompute is None or not has_checkpoint:
        raise UsageError(f"missing {paths.LOGITS} in {model_dir}")
    print(f"recomputing the signals of {model_dir}")
    recompute(model_dir)


def _load_keep_and_labels(exp: Path) -> tuple[np.ndarray, np.ndarray]:
    keep, labels = load_npy(exp / paths.KEEP_MATRIX), load_npy(exp / paths.LABELS)
    if keep.dtype != bool or keep.ndim != 2 or labels.ndim != 1 or labels.shape[0] != keep.shape[1]:
        raise UsageError(f"{exp}: {paths.KEEP_MATRIX} {keep.shape} {keep.dtype} and {paths.LABELS} {labels.shape} "
                         f"do not match (expected bool [models, pool] and [pool])")
    return keep, labels.astype(np.int64)


def _check_shape(f: Path, arr: np.ndarray, expected: tuple, what: str) -> None:
    if tuple(arr.shape) != tuple(expected):
        raise UsageError(f"{f} has shape {tuple(arr.shape)}, expected {tuple(expected)} ({what})")


def load_experiment(exp_dir: str | Path, recompute: bool = True) -> Signals:
    """Signals of every complete model of one experiment, validated against each other."""
    exp = Path(exp_dir)
    if not (exp / paths.KEEP_MATRIX).exists():
        raise UsageError(f"{exp} is not an experiment directory (no {paths.KEEP_MATRIX})")
    config = load_json(exp / paths.CONFIG)
    keep_all, labels = _load_keep_and_labels(exp)
    n = len(labels)
    indices = [i for i in range(len(keep_all)) if (paths.model_dir(exp, i) / paths.COMPLETE).exists()]
    if not indices:
        raise UsageError(f"{exp}: no finished model (no {paths.COMPLETE} marker); train it first")
    logits, sens, summaries = [], [], {}
    for i in indices:
        d = paths.model_dir(exp, i)
        if recompute:
            ensure_signals(d)
        keep = load_npy(d / paths.KEEP)
        if keep.shape != (n,) or not np.array_equal(keep, keep_all[i]):
            raise UsageError(f"{d / paths.KEEP} differs from row {i} of {exp / paths.KEEP_MATRIX}")
        lg = load_npy(d / paths.LOGITS, mmap=True)
        if lg.ndim != 3:
            raise UsageError(f"{d / paths.LOGITS} has shape {lg.shape}, expected [pool, queries, classes]")
        expected = logits[0].shape if logits else (n,) + tuple(lg.shape[1:])
        _check_shape(d / paths.LOGITS, lg, expected, f"[pool {n}, queries, classes] as model {indices[0]}")
        logits.append(lg.astype(np.float32, copy=False))
        if (d / paths.SENSITIVITY).exists():
            s = load_npy(d / paths.SENSITIVITY, mmap=True)
            _check_shape(d / paths.SENSITIVITY, s, (n, lg.shape[2]), "[pool, classes]")
            sens.append(s.astype(np.float32, copy=False))
        summaries[i] = load_json(d / paths.SUMMARY) if (d / paths.SUMMARY).exists() else {}
    if labels.min() < 0 or labels.max() >= logits[0].shape[2]:
        raise UsageError(f"{exp / paths.LABELS}: labels outside 0..{logits[0].shape[2] - 1} (the logits' classes)")
    return Signals(exp, config, indices, ModelStack(logits), ModelStack(sens) if len(sens) == len(indices) else None,
                   keep_all[indices], labels, summaries)
