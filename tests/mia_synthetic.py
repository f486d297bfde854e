"""Synthetic attack signals and the on-disk experiment layout (artifacts/paths.py), for the MIA tests.

Logits: example n has a shared "difficulty" d_n on its true class and shared logits on the others;
each model adds its own noise, each query a little more, and a member of model m gets `gap` more on
its true class. gap = 0 makes membership invisible (AUC 0.5 for every attack); a large gap makes
it separable. Sensitivity is smaller for members by the same mechanism (SAMIA).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from artifacts import paths
from artifacts.rundir import ModelStack, Signals
from training.membership import keep_matrix
from utils.io import save_json, save_npy, save_text


def synthetic_signals(n: int = 2000, num_shadows: int = 8, queries: int = 2, classes: int = 10,
                      gap: float = 5.0, seed: int = 0, noise_seed: int | None = None) -> dict:
    """noise_seed (default: seed) draws the logits and sensitivities: two configurations with one seed and
    different noise seeds share the keep matrix and labels (they are paired) but not their models' noise."""
    rng = np.random.default_rng(seed)
    m = num_shadows + 1
    keep = keep_matrix(m, n, seed)
    labels = rng.integers(0, classes, n)
    if noise_seed is not None:
        rng = np.random.default_rng([seed, noise_seed])
    base = rng.normal(0.0, 1.0, (1, n, 1, classes)) + rng.normal(0.0, 0.5, (m, n, 1, classes))
    logits = base + rng.normal(0.0, 0.2, (m, n, queries, classes))
    is_y = np.arange(classes) == labels[:, None]                                  # [n, C]
    boost = rng.normal(1.0, 1.5, (1, n)) + gap * keep                             # [m, n]
    logits = logits + (boost[:, :, None, None] * is_y[None, :, None, :])
    sens = np.abs(rng.normal(1.0, 0.3, (m, n, classes))) * np.exp(-0.2 * gap * keep)[:, :, None]
    return {"logits": logits.astype(np.float32), "sensitivity": sens.astype(np.float32),
            "keep": keep, "labels": labels.astype(np.int64)}


def in_memory(sig: dict, sensitivity: bool = True) -> Signals:
    """The Signals that load_experiment would return for these arrays (no files)."""
    m = len(sig["keep"])
    sens = ModelStack(list(sig["sensitivity"])) if sensitivity else None
    return Signals(Path("synthetic"), {"name": "synthetic"}, list(range(m)), ModelStack(list(sig["logits"])), sens,
                   sig["keep"].copy(), sig["labels"], {})


def write_experiment(runs_dir: str | Path, sig: dict, method: str = "dense", sparsity: float = 0.0,
                     dataset: str = "synthetic", name: str | None = None) -> Path:
    """Write an experiment in the training side's layout; returns its directory."""
    exp = paths.experiment_dir(runs_dir, method, sparsity, dataset)
    m = len(sig["keep"])
    cfg = {"name": name or (method if method == "dense" else f"{method}_{sparsity:g}"), "method": method,
           "sparsity": sparsity, "dataset": dataset, "arch": "resnet", "layers": 20, "num_shadows": m - 1,
           "mia_queries": sig["logits"].shape[2]}
    save_json(cfg, exp / paths.CONFIG)
    save_npy(sig["keep"], exp / paths.KEEP_MATRIX)
    save_npy(sig["labels"], exp / paths.LABELS)
    for i in range(m):
        d = paths.model_dir(exp, i)
        save_json({"train_acc": 0.99 - 0.001 * i, "test_acc": 0.9 - 0.001 * i, "sparsity": sparsity}, d / paths.SUMMARY)
        save_npy(sig["keep"][i], d / paths.KEEP)
        save_npy(sig["logits"][i], d / paths.LOGITS)
        save_npy(sig["sensitivity"][i], d / paths.SENSITIVITY)
        save_text("done\n", d / paths.COMPLETE)
    return exp
