#!/usr/bin/env python
"""Why the packed network loses on a CPU with CIFAR-sized images (docs/packing.md, "How a pack computes"):
one grouped 3x3 convolution over K models' channels (what pack_models builds) against K plain ones
(what one by one and a sequential pack run), forward + backward, per layer shape of a ResNet-20, in NCHW
and channels_last. Ratio > 1: the grouped convolution is faster.

  python benchmarks/grouped_conv.py                 # CPU, batch 128, K = 4
  python benchmarks/grouped_conv.py --device cuda --k 16
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from benchmarks.common import machine, sync
from utils.device import keep_freed_cpu_memory, resolve_device


def seconds(step, device, iters: int) -> float:
    step()  # warm-up: oneDNN/cuDNN algorithm choice, allocator
    sync(device)
    t = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    return (time.perf_counter() - t) / iters


def conv_step(c: int, hw: int, batch: int, k: int, fmt, device, grouped: bool):
    """Forward + backward of K models' c -> c 3x3 convolution: one grouped call, or K plain ones."""
    width = k * c if grouped else c
    x = torch.randn(batch, width, hw, hw, device=device).to(memory_format=fmt).requires_grad_()
    w = torch.randn(width, c, 3, 3, device=device).to(memory_format=fmt).requires_grad_()
    if grouped:
        return lambda: F.conv2d(x, w, padding=1, groups=k).sum().backward()
    return lambda: [F.conv2d(x, w, padding=1).sum().backward() for _ in range(k)]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--k", type=int, default=4, help="models in the pack")
    p.add_argument("--iters", type=int, default=5)
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    if device.type == "cpu":
        keep_freed_cpu_memory()  # as in training
    print(f"machine: {machine()}; batch {a.batch_size}, K = {a.k}, {a.iters} timed steps, forward + backward")
    for c, hw in ((16, 32), (32, 16), (64, 8)):  # ResNet-20's three stages
        for name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
            plain = seconds(conv_step(c, hw, a.batch_size, a.k, fmt, device, False), device, a.iters)
            grouped = seconds(conv_step(c, hw, a.batch_size, a.k, fmt, device, True), device, a.iters)
            print(f"{c:3d} channels {hw:2d}x{hw:<2d} {name:13s}: {a.k} plain {plain * 1e3:7.1f} ms, "
                  f"grouped {grouped * 1e3:7.1f} ms, grouped / plain speed {plain / grouped:4.2f}x", flush=True)


if __name__ == "__main__":
    main()
