#!/usr/bin/env python
"""Signal extraction: logits.npy for a pool (2 queries) with our on-device batched pass
(training.signals.compute_logits) against a plain per-batch loop (DataLoader over float tensors,
one query at a time, per-batch host copies), same model, in the same run.

  python benchmarks/signal_speed.py [--n 5000] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.common import cifar_like, machine
from data import DeviceData
from data.datasets import from_arrays
from training.signals import compute_logits
from models import build_model


@torch.no_grad()
def plain_loop(model, pool: DeviceData, device, bs=128) -> np.ndarray:
    ds = torch.utils.data.TensorDataset(pool.normalize(pool.x).cpu())
    out = []
    for (xb,) in torch.utils.data.DataLoader(ds, batch_size=bs):
        xb = xb.to(device)
        out.append(np.stack([model(xb).cpu().numpy(), model(xb.flip(-1)).cpu().numpy()], 1))
    return np.concatenate(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=3, help="alternating timed rounds per contestant")
    a = p.parse_args()
    x, y, source = cifar_like(a.n)
    ds = from_arrays("bench", x, y, x[:10], y[:10])
    dev = torch.device(a.device)
    model = build_model("resnet", 20, 1, 10, 3).to(dev).to(memory_format=torch.channels_last).eval()
    pool = DeviceData.build(ds.x_train, ds.y_train, ds, dev)
    print(f"machine: {machine()}\ndata: {source}, {a.n} images, 2 queries, ResNet-20, device {a.device}")
    # Warm both up (oneDNN primitive creation, allocator), then alternate them so that a busy machine
    # slows both alike; report the median of the rounds.
    small = DeviceData.build(ds.x_train[:256], ds.y_train[:256], ds, dev)
    compute_logits(model, small, 2, 10), plain_loop(model, small, dev)
    t_ours, t_base = [], []
    for _ in range(a.rounds):
        t = time.perf_counter()
        ours = compute_logits(model, pool, 2, 10)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        base = plain_loop(model, pool, dev)
        t_base.append(time.perf_counter() - t)
    assert np.allclose(ours, base, atol=1e-3), "the two passes disagree"
    t_ours, t_base = float(np.median(t_ours)), float(np.median(t_base))
    print(f"plain per-batch loop: {a.n / t_base:9.1f} images/s (median of {a.rounds})")
    print(f"ours (on-device):     {a.n / t_ours:9.1f} images/s (median of {a.rounds})")
    print(f"ratio ours / plain: {t_base / t_ours:.2f}x")


if __name__ == "__main__":
    main()
