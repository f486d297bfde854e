#!/usr/bin/env python
"""Packed training throughput: K models trained at once as one packed network (training.trainer.Trainer
with K indices, docs/packing.md) against the same K models one by one, in the same process. Aggregate
images/s = K x images per step / time per step; one by one, K models in sequence run at the single
model's rate, so each K's packed figure is compared with a single model timed right after it (the two
interleaved, so a busy machine slows both alike). Every model trains on its own shuffle of the data, with
the training loop itself (pruning hooks included with --method), not a synthetic step.

  python benchmarks/pack_throughput.py                                   # ResNet-20, batch 128, CPU, K = 1 2 4 8 16
  python benchmarks/pack_throughput.py --device cuda --iters 100 --compile    # the GPU figure (bf16, channels_last)
  python benchmarks/pack_throughput.py --data digits --batch-size 32 --packs 1 2 4 8   # the quick preset's workload
  python benchmarks/pack_throughput.py --pack-mode grouped     # the packed network where auto would not choose it

How a pack computes (--pack-mode, training/packing.py pack_mode): auto = grouped (one packed network) on CUDA
and for images of at most 16x16, else sequential (each model in turn, one optimizer step); printed in the header.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import cifar_like, machine, sync
from configs.config import PACK_MODES, ExperimentConfig
from data import load_dataset
from data.datasets import from_arrays
from training.packing import pack_mode
from training.trainer import Trainer
from utils.device import resolve_device


class _Bar:
    def update(self, n):
        pass


def images_per_s(cfg: ExperimentConfig, ds, k: int, iters: int, warmup: int) -> float:
    """Aggregate training images/s of K models packed (K = 1: one model alone), over `iters` timed steps."""
    keep = np.ones((k, len(ds.y_train)), bool)  # every model on the whole set, each with its own shuffle
    tr = Trainer(cfg, ds, keep, list(range(k)), steps=(cfg.batch_size, warmup))
    tr.train_epoch(0, _Bar())  # warm-up: allocator, oneDNN/cuDNN algorithms, compilation
    tr.iters = iters
    for m in tr.seats:
        m.iters = iters
    sync(tr.device)
    t = time.perf_counter()
    seen = tr.train_epoch(1, _Bar())[2]
    sync(tr.device)
    return k * seen / (time.perf_counter() - t)


def ops_per_step(cfg: ExperimentConfig, ds, k: int) -> int:
    """Operators one training step of a pack of K dispatches (profiler's aten ops called from Python or by the
    autograd engine: data pipeline, forward, backward, pruning hooks and optimizer): each is at least one kernel
    launch on a GPU, where a ResNet-20 step is launch-bound. Measured on any device."""
    import torch

    keep = np.ones((k, len(ds.y_train)), bool)
    tr = Trainer(cfg, ds, keep, list(range(k)), steps=(cfg.batch_size, 1))
    tr.train_epoch(0, _Bar())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        tr.train_epoch(1, _Bar())
    def outer(e):  # called from Python or by the autograd engine (backward), not inside another operator
        return e.cpu_parent is None or e.cpu_parent.name.startswith("autograd::engine::evaluate_function")

    return sum(1 for e in prof.events() if e.name.startswith("aten::") and outer(e))


def measure(a) -> list[dict]:
    """One row per K: packed and one-by-one aggregate images/s and their ratio."""
    if a.data == "digits":  # the quick preset's images: 8x8, one channel (a step is overhead-bound)
        ds, source = load_dataset(ExperimentConfig(dataset="digits")), "embedded digits, 1x8x8"
    else:
        x, y, source = cifar_like(a.batch_size * max(a.iters, a.warmup))
        ds = from_arrays("bench", x, y, x[:64], y[:64])
    prune = dict(method=a.method, sparsity=0.9) if a.method != "dense" else {}
    cfg = ExperimentConfig(dataset="npz", data_path="-", arch=a.arch, layers=a.layers, width_factor=a.width_factor,
                           batch_size=a.batch_size, epochs=10, device=a.device, amp=a.amp, pack_mode=a.pack_mode,
                           channels_last=a.channels_last, compile=a.compile, **prune).resolved()
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()}")
    print(f"data: {source}; {a.arch}-{a.layers}, method {a.method}, batch {a.batch_size} per model, device {a.device}, "
          f"amp {a.amp}, channels_last {a.channels_last}, compile {a.compile}, {a.iters} timed steps, "
          f"pack mode {pack_mode(cfg, resolve_device(a.device), ds.x_train.shape)} (--pack-mode {a.pack_mode})")
    runs = {k: ([], []) for k in a.packs}
    for r in range(a.rounds):  # rounds over every K: a load that comes and goes spreads over all of them
        for k in a.packs:
            runs[k][0].append(images_per_s(cfg, ds, k, a.iters, a.warmup))
            runs[k][1].append(images_per_s(cfg, ds, 1, a.iters, a.warmup))
            print(f"round {r + 1} K = {k:2d}: packed {runs[k][0][-1]:10.1f}, one by one {runs[k][1][-1]:10.1f} images/s",
                  flush=True)
    rows, ops1 = [], ops_per_step(cfg, ds, 1)
    for k, (packed, single) in runs.items():
        packed, single = float(np.median(packed)), float(np.median(single))
        ops = ops_per_step(cfg, ds, k)
        rows.append({"k": k, "packed_images_per_s": packed, "one_by_one_images_per_s": single,
                     "ratio": packed / single, "ops_per_step_packed": ops, "ops_per_step_one_by_one": k * ops1})
        print(f"K = {k:2d}: packed {packed:10.1f} images/s, {k} one by one {single:10.1f} images/s, "
              f"ratio {packed / single:5.2f}x (median of {a.rounds}); operators per step of K models: "
              f"packed {ops}, one by one {k * ops1}", flush=True)
    print(f"load average after: {os.getloadavg()}")
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="pack sizes K")
    p.add_argument("--arch", default="resnet")
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--width-factor", type=int, default=2)
    p.add_argument("--method", default="dense", help="dense or a pruning method (its hooks run every step)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data", choices=("cifar", "digits"), default="cifar",
                   help="cifar: 3x32x32 (CIFAR-10 from ../shared when present, else synthetic); digits: the embedded 1x8x8 set")
    p.add_argument("--iters", type=int, default=5, help="timed training steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument("--rounds", type=int, default=1, help="repeat every K this many times, report the medians")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--pack-mode", choices=PACK_MODES, default="auto", help="how a pack computes (training/packing.py)")
    return p


if __name__ == "__main__":
    measure(parser().parse_args())
