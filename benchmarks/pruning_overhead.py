#!/usr/bin/env python
"""Time cost of pruning against dense training: N training iterations of the same model on one fixed
random batch (data loading excluded, so the overhead ratio is an upper bound), dense vs every pruning
method, masks refreshed every --prune-freq iterations throughout (the schedule never reaches its target
here, so gmp refreshes too: the worst case; static is pruned once at initialisation, so its cost is the
per-step masking alone). Methods are interleaved over --rounds to spread machine noise. Every method, dense
included, runs the same synchronisations (around each hook point) and the training autocast (bf16 on
CUDA from compute capability 8.0, fp16 before, none on CPU: training.precision.autocast).

  python benchmarks/pruning_overhead.py                         # ResNet-20, batch 128, CPU
  python benchmarks/pruning_overhead.py --arch wideresnet --layers 28 --width-factor 2 --device cuda --iters 200
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.common import machine, sync as sync_device
from configs.config import ExperimentConfig
from models import build_model
from pruning import PRUNING_METHODS, build_pruner
from training.precision import autocast

METHODS = tuple(PRUNING_METHODS)  # dense first: the baseline


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet")
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--width-factor", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--iters", type=int, default=16, help="timed iterations per method per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                   help="methods to time, dense always among them (default: every method; the channel pruners "
                        "cannot reach --sparsity 0.9 on ResNet-20's 16-channel layers)")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--prune-freq", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="the training autocast on CUDA")
    return p.parse_args()


class Run:
    """One method's model, optimizer and pruner; `it` carries on across rounds."""

    def __init__(self, method: str, a: argparse.Namespace, device: torch.device, x, y):
        torch.manual_seed(0)
        self.model = build_model(a.arch, a.layers, a.width_factor, 10, 3).to(device, memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        # target far beyond the run: the cubic schedule keeps refreshing every prune_freq iterations
        self.pruner = build_pruner(method, self.model, a.sparsity, iters_per_epoch=10**6, target_epoch=1,
                                   freeze_epoch=None, prune_freq=a.prune_freq, epochs=1)  # rigl, set: updating; dense: None
        if self.pruner is not None:
            self.pruner.at_init([(x, y)])  # snip, synflow: the mask (not timed: once per run)
        self.it, self.hook_s = 0, 0.0  # hook_s: time inside the pruner's calls (less noisy than the ratio)
        self.cfg, self.device = ExperimentConfig(amp=a.amp), device

    def hook(self, name: str):
        """Synchronised around the hook point for every method (dense: an empty hook), so all pay the same syncs."""
        sync(self.model)
        t = time.perf_counter()
        out = getattr(self.pruner, name)(*((self.it,) if name == "before_step" else ())) if self.pruner else None
        sync(self.model)
        self.hook_s += time.perf_counter() - t
        return out

    def step(self, x, y) -> None:
        self.hook("before_step")
        with autocast(self.cfg, self.device):
            loss = F.cross_entropy(self.model(x).float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.hook("after_backward") is not False:  # False: a RigL update replaced the step
            self.opt.step()
        self.hook("after_optimizer_step")
        self.it += 1


def sync(model) -> None:
    sync_device(next(model.parameters()).device)


def timed(run: Run, x, y, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run.step(x, y)
        sync(run.model)
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    a = parse()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()}")
    x = torch.randn(a.batch_size, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch_size,), device=device)
    methods = list(dict.fromkeys(["dense", *a.methods]))
    runs = {m: Run(m, a, device, x, y) for m in methods}
    times = {m: [] for m in methods}
    for m in methods:
        timed(runs[m], x, y, a.warmup)
        runs[m].hook_s = 0.0
    for _ in range(a.rounds):
        for m in methods:
            times[m] += timed(runs[m], x, y, a.iters)
    print(f"load average after: {os.getloadavg()}")
    print(f"{a.arch}-{a.layers} (width {a.width_factor}), batch {a.batch_size}, {a.device}, "
          f"{a.rounds} rounds x {a.iters} its per method, refresh every {a.prune_freq} its")
    dense_mean, dense_med = statistics.mean(times["dense"]), statistics.median(times["dense"])
    print(f"{'method':8s} {'mean s/it':>10s} {'median s/it':>12s} {'mean/dense':>11s} {'median/dense':>13s} "
          f"{'refreshes':>10s} {'pruner s/it':>12s} {'pruner/dense':>13s}")
    for m in methods:
        mean, med = statistics.mean(times[m]), statistics.median(times[m])
        refreshes = runs[m].pruner.total_refreshes if runs[m].pruner else 0
        hook = runs[m].hook_s / len(times[m])
        print(f"{m:8s} {mean:10.4f} {med:12.4f} {mean / dense_mean:11.3f} {med / dense_med:13.3f} {refreshes:10d}"
              f" {hook:12.5f} {hook / dense_med:13.4f}")


if __name__ == "__main__":
    main()
