"""Load an experiment's signals (the on-disk layout of configs/paths.py) for the attacks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from configs import paths
from utils.errors import UsageError
from utils.io import load_json, load_npy


@dataclass
class Signals:
    exp_dir: Path
    config: dict
    indices: list[int]              # complete model indices, in order
    logits: np.ndarray              # [M, N, Q, C] float32 for the models in `indices`
    sensitivity: np.ndarray | None  # [M, N, C] or None if any model lacks it
    keep: np.ndarray                # [M, N] bool, rows of keep_matrix.npy for `indices`
    labels: np.ndarray              # [N]
    summaries: dict[int, dict]      # experiment_summary.json per model index

    def row(self, model_index: int) -> int:
        return self.indices.index(model_index)


def _model_dirs(exp: Path, num_models: int) -> dict[int, Path]:
    return {i: paths.model_dir(exp, i) for i in range(num_models)}


def _ensure(model_dir: Path, recompute: bool) -> None:
    """Single hook for missing or stale signals: recompute them from the model's checkpoint."""
    from configs.config import load_config
    from mia.signals import ensure_signals, signals_stale

    why = signals_stale(model_dir, load_config(model_dir / paths.CONFIG))
    if why is None:
        return
    if not recompute:
        raise UsageError(f"{model_dir}: {why} (run with signal recomputation enabled)")
    print(f"recomputing signals of {model_dir} ({why})")
    ensure_signals(model_dir)


def load_experiment(exp_dir: str | Path, recompute: bool = True) -> Signals:
    exp = Path(exp_dir)
    if not (exp / paths.KEEP_MATRIX).exists():
        raise UsageError(f"{exp} is not an experiment directory (no {paths.KEEP_MATRIX})")
    config = load_json(exp / paths.CONFIG)
    keep_all = load_npy(exp / paths.KEEP_MATRIX)
    labels = load_npy(exp / paths.LABELS)
    if keep_all.dtype != bool or keep_all.ndim != 2 or labels.shape != (keep_all.shape[1],):
        raise UsageError(f"{exp}: keep_matrix.npy {keep_all.shape} {keep_all.dtype} and labels.npy {labels.shape} do not match")
    complete = {i: d for i, d in _model_dirs(exp, len(keep_all)).items() if (d / paths.COMPLETE).exists()}
    if not complete:
        raise UsageError(f"{exp}: no finished model (no {paths.COMPLETE} marker); train it first")
    logits, sens, summaries = [], [], {}
    for i, d in complete.items():
        _ensure(d, recompute)
        k = load_npy(d / paths.KEEP)
        if not np.array_equal(k, keep_all[i]):
            raise UsageError(f"{d / paths.KEEP} differs from row {i} of {exp / paths.KEEP_MATRIX}")
        lg = load_npy(d / paths.LOGITS, mmap=True)
        if lg.ndim != 3 or lg.shape[0] != len(labels) or (logits and lg.shape != logits[0].shape):
            raise UsageError(f"{d / paths.LOGITS} has shape {lg.shape}, expected "
                             f"{logits[0].shape if logits else ('pool', 'queries', 'classes')} with pool {len(labels)}")
        logits.append(lg)
        s = load_npy(d / paths.SENSITIVITY, mmap=True) if (d / paths.SENSITIVITY).exists() else None
        if s is not None and s.shape != (len(labels), lg.shape[2]):
            raise UsageError(f"{d / paths.SENSITIVITY} has shape {s.shape}, expected {(len(labels), lg.shape[2])}")
        sens.append(s)
        summaries[i] = load_json(d / paths.SUMMARY) if (d / paths.SUMMARY).exists() else {}
    idx = list(complete)
    return Signals(exp, config, idx, np.stack(logits).astype(np.float32, copy=False),
                   None if any(s is None for s in sens) else np.stack(sens).astype(np.float32, copy=False),
                   keep_all[idx], labels.astype(np.int64), summaries)
