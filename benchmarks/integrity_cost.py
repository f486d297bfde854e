#!/usr/bin/env python
"""What refusing non-finite numbers and checking content hashes costs (docs/long_runs.md, "When a model
fails"; docs/run_directory.md), each as a ratio against the time it guards:

- training: the per-step finite flag (isfinite, where, minimum on the [K] losses, on the device; read every
  CHECK_EVERY steps) and the epoch-end weights check, against a training step (ResNet-20 at CIFAR shapes,
  batch 128, and the quick preset's digits pack of 9 at batch 32, whose steps are the shortest here). The
  added operations are timed alone, many times over: an A/B of two training runs on a shared machine varies
  by more than the 2% asked for.
- reading: the reader (artifacts/rundir.py load_experiment) on a synthetic experiment of --models models at a
  50,000-example pool (logits float32 [N, 2, 10], sensitivity [N, 10]: the shapes the issue names), with and
  without its checks (the signals' digests and the finite scan), against what the read guards: the reader
  plus the attacks an evaluation runs on what it read. Measured: every attack of the default suites that
  trains no network (LiRA online and offline, RMIA, the threshold attacks) against one target, a lower bound
  of an evaluation (the network attacks and further targets only add to it), and, the floor, offline LiRA
  alone. Also each digest utils/io.DIGESTS offers, per file (crc32, the default, and sha256, which summaries
  written before it record).

  python benchmarks/integrity_cost.py                  # CPU, 17 models
  python benchmarks/integrity_cost.py --models 5 --pool 10000
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from benchmarks.common import cifar_like, machine
from artifacts import paths
from configs.config import ExperimentConfig
from data.datasets import from_arrays, load_digits_dataset
from artifacts import rundir
from mia.attacks import ATTACKS
from mia.cli import settings_for
from mia.evaluate import attack_target
from training.membership import keep_matrix
from training.trainer import CHECK_EVERY, Trainer, weights_finite
from utils.io import DIGESTS, file_digest, save_json, save_npy, save_text

# The attacks of the default suites that train no network (the cheapest part of an evaluation)
NO_NETWORK = [a for a, spec in ATTACKS.items() if "nn_" not in spec.settings and not spec.needs_sensitivity]
CIFAR_EPOCH_STEPS = 25_000 // 128  # a study model's steps per epoch (half of CIFAR-10's 50,000, batch 128)


class _Bar:
    def update(self, n):
        pass


def best_of(fn, reps: int) -> float:
    """The least CPU time (s) of this process over `reps` runs of fn(), one torch thread: the work itself, not
    the waits for a core of a shared machine (wall times there varied tenfold)."""
    out = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return min(out)


def training_case(name: str, tr: Trainer, epoch_steps: int, reps: int) -> dict:
    tr.train_epoch(0, _Bar())  # warm-up
    step = best_of(lambda: tr.train_epoch(1, _Bar()), reps) / tr.iters
    k = len(tr.seats)
    losses = torch.rand(k, device=tr.device)
    first_bad = torch.full((k,), tr.iters, device=tr.device, dtype=torch.long)
    n = 2000

    def flag():  # what train_epoch adds at each step, n times, and its read every CHECK_EVERY steps
        fb = first_bad
        for i in range(n):
            fb = torch.minimum(fb, torch.where(torch.isfinite(losses), tr.iters, i))
            if (i + 1) % CHECK_EVERY == 0:
                fb.tolist()

    per_step = best_of(flag, reps) / n
    weights = best_of(lambda: [weights_finite(n) for n in tr.nets], reps)  # what fit() checks (per network)
    added = per_step + weights / epoch_steps
    print(f"training, {name}: step {step * 1e3:.2f} ms; finite flag {per_step * 1e6:.1f} us a step, weights check "
          f"{weights * 1e3:.2f} ms an epoch ({epoch_steps} steps): {100 * added / step:.2f}% of a step")
    return {"step_s": step, "flag_s": per_step, "weights_s": weights, "ratio": added / step}


def training(reps: int) -> dict:
    x, y, source = cifar_like(640)  # 5 steps an epoch
    ds = from_arrays("bench", x, y, x[:256], y[:256])
    cfg = ExperimentConfig(dataset="npz", data_path="-", batch_size=128, epochs=3, device="cpu").resolved()
    out = {"resnet20_cifar": training_case(f"ResNet-20, {source}, batch 128", Trainer(cfg, ds, np.ones(len(y), bool)),
                                           CIFAR_EPOCH_STEPS, reps)}
    digits = load_digits_dataset(None)
    keep = keep_matrix(9, 200, 0)  # the quick preset: pool 200, 9 models packed, batch 32
    digits.x_train, digits.y_train = digits.x_train[:200], digits.y_train[:200]
    cfg = ExperimentConfig(dataset="digits", batch_size=32, epochs=60, pack=9, device="cpu").resolved()
    tr = Trainer(cfg, digits, keep, list(range(9)))
    out["digits_pack9"] = training_case("digits, a pack of 9, batch 32 (the quick preset)", tr, tr.iters, reps)
    return out


def synthetic_experiment(root: Path, models: int, pool: int, queries: int, classes: int) -> Path:
    """An experiment directory as training writes it (digests recorded), with random finite signals."""
    exp = root / "exp"
    rng = np.random.default_rng(0)
    keep = keep_matrix(models, pool, 0)
    save_npy(keep, exp / paths.KEEP_MATRIX)
    save_npy(rng.integers(0, classes, pool).astype(np.int64), exp / paths.LABELS)
    save_json({"name": "bench", "method": "dense", "dataset": "bench"}, exp / paths.CONFIG)
    for i in range(models):
        d = paths.model_dir(exp, i)
        save_npy(keep[i], d / paths.KEEP)
        save_npy(rng.normal(0, 3, (pool, queries, classes)).astype(np.float32), d / paths.LOGITS)
        save_npy(rng.random((pool, classes), dtype=np.float32), d / paths.SENSITIVITY)
        save_json({"model_index": i, "digests": {f: file_digest(d / f) for f in (paths.LOGITS, paths.SENSITIVITY)}},
                  d / paths.SUMMARY)
        save_text("bench\n", d / paths.COMPLETE)
    return exp


@contextmanager
def unchecked():
    """The reader as it was before its checks: no content hash computed, no finite scan."""
    with mock.patch.object(rundir, "recorded_digests", lambda d: {}), \
            mock.patch.object(rundir, "count_nonfinite", lambda a: 0):
        yield


def reading(models: int, pool: int, queries: int, classes: int, reps: int) -> dict:
    with tempfile.TemporaryDirectory(dir=".") as tmp:  # the disk a runs directory is on, not a tmpfs
        exp = synthetic_experiment(Path(tmp), models, pool, queries, classes)
        f = exp / paths.LOGITS
        size = f.stat().st_size
        hashes = {name: best_of(lambda: file_digest(f, name), reps) for name in DIGESTS}
        read = best_of(lambda: np.load(f), reps)
        print(f"one logits file, {size / 1e6:.1f} MB [{pool}, {queries}, {classes}]: np.load {read * 1e3:.1f} ms; "
              + ", ".join(f"{k} {v * 1e3:.1f} ms ({size / v / 1e9:.2f} GB/s)" for k, v in hashes.items()))
        with unchecked():
            plain = best_of(lambda: rundir.load_experiment(exp), reps)
            sig = rundir.load_experiment(exp)
        checked = best_of(lambda: rundir.load_experiment(exp), reps)
        st = settings_for("cpu")
        each = {a: best_of(lambda: attack_target(a, sig, 0, st), 1) for a in NO_NETWORK}
        added = checked - plain
    attack, suite = each["lira_offline"], sum(each.values())
    print(f"reader, {models} models: load_experiment {plain * 1e3:.0f} ms unchecked (memory-mapped: it reads "
          f"headers), {checked * 1e3:.0f} ms checked (+{added * 1e3:.0f} ms: digests and finite scan of every signal), "
          f"{added / plain:.1f}x the unchecked reader")
    print("attacks against model 0: " + ", ".join(f"{a} {t * 1e3:.0f} ms" for a, t in each.items()))
    print(f"checks = {100 * added / (plain + suite):.2f}% of reading + the {len(each)} attacks that train no network "
          f"(a lower bound of an evaluation); {100 * added / (plain + attack):.2f}% of reading + offline LiRA alone")
    return {"file_mb": size / 1e6, "np_load_s": read, "hash_s": hashes, "reader_plain_s": plain,
            "reader_checked_s": checked, "attack_s": each, "ratio_vs_read_and_attacks": added / (plain + suite),
            "ratio_vs_read_and_attack": added / (plain + attack)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=17, help="models of the synthetic experiment (target + 16 shadows)")
    p.add_argument("--pool", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=2)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--reps", type=int, default=5, help="timings per measurement (the fastest is kept)")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-reading", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {machine()}")
    out = {} if a.skip_reading else {"reading": reading(a.models, a.pool, a.queries, a.classes, a.reps)}
    if not a.skip_training:
        out["training"] = training(a.reps)
    print(json.dumps(out, default=float))
    return out


if __name__ == "__main__":
    main()
