#!/usr/bin/env python
"""Training throughput: our on-device loop (training.trainer.Trainer) against a plain PyTorch
baseline (torchvision-style Dataset of PIL images + RandomCrop/RandomHorizontalFlip/ToTensor/
Normalize + DataLoader), same model, batch size and precision, in the same run.

  python benchmarks/train_throughput.py                       # ResNet-20, batch 128, CPU
  python benchmarks/train_throughput.py --no-amp              # fp32 (a CPU with native bf16 trains in bf16 by default)
  python benchmarks/train_throughput.py --arch wideresnet --layers 28 --device cuda --iters 200
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.common import cifar_like, machine, sync
from configs.config import ExperimentConfig
from data.datasets import from_arrays
from models import ARCHS, check_arch
from training.precision import autocast
from training.trainer import Trainer
from utils.errors import cli_main


class PILDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 HWC -> PIL image -> transform."""

    def __init__(self, x, y, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), int(self.y[i])


def baseline_images_per_s(tr: Trainer, x_hwc, y, iters: int, workers: int) -> float:
    import torchvision.transforms as T

    mean = tr.train.mean.flatten().tolist()
    std = tr.train.std.flatten().tolist()
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    loader = torch.utils.data.DataLoader(PILDataset(x_hwc, y, tf), batch_size=tr.cfg.batch_size, shuffle=True,
                                         num_workers=workers, drop_last=True,
                                         pin_memory=tr.device.type == "cuda")
    model, opt = tr.model, tr.opt
    model.train()
    seen, t0 = 0, None
    it = iter(loader)
    for i in range(iters + 2):  # first 2 iterations are warm-up
        if i == 2:
            sync(tr.device)
            t0, seen = time.perf_counter(), 0
        try:
            xb, yb = next(it)
        except StopIteration:
            it = iter(loader)
            xb, yb = next(it)
        xb, yb = xb.to(tr.device, non_blocking=True), yb.to(tr.device, non_blocking=True)
        with autocast(tr.cfg, tr.device):  # the precision ours trains in (fp32 or bf16 on a CPU)
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(yb)
    sync(tr.device)
    return seen / (time.perf_counter() - t0)


def ours_images_per_s(tr: Trainer, iters: int) -> float:
    class Bar:
        def update(self, n):
            pass

    # Run whole epochs of our loop until `iters` iterations are timed (after one warm-up epoch).
    tr.train_epoch(0, Bar())
    sync(tr.device)
    seen, t0, epoch = 0, time.perf_counter(), 1
    while seen < iters * tr.cfg.batch_size:
        seen += tr.train_epoch(epoch, Bar())[2]
        epoch += 1
    sync(tr.device)
    return seen / (time.perf_counter() - t0)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet", choices=sorted(ARCHS))
    p.add_argument("--layers", type=int, default=None, help="default: the arch's (models.ARCHS)")
    p.add_argument("--width-factor", type=int, default=None, help="default: the arch's (models.ARCHS)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--iters", type=int, default=30, help="timed iterations per contestant")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the baseline")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true")
    return p


def measure(a) -> dict:
    """Both contestants' images/s and their ratio (printed as they come)."""
    a.layers = a.layers or ARCHS[a.arch].default_layers
    check_arch(a.arch, a.layers, a.width_factor)  # a bad depth: UsageError (main prints one line, exits 2)
    n = a.batch_size * (a.iters // 2 + 1)  # our loop runs whole epochs: a few per measurement
    x, y, source = cifar_like(max(n, 2 * a.batch_size))
    ds = from_arrays("bench", x, y, x[:256], y[:256])
    cfg = ExperimentConfig(dataset="npz", data_path="-", arch=a.arch, layers=a.layers, batch_size=a.batch_size,
                           width_factor=a.width_factor or ARCHS[a.arch].default_width, epochs=1, device=a.device, amp=a.amp, channels_last=a.channels_last,
                           compile=a.compile, workers=a.workers)
    cfg.milestones, cfg.name = [1], "bench"
    print(f"machine: {machine()}")
    print(f"data: {source}, {len(x)} images; model {a.arch}-{a.layers}, batch {a.batch_size}, device {a.device}, "
          f"amp {a.amp}, channels_last {a.channels_last}, compile {a.compile}")
    keep = np.ones(len(x), bool)
    # Same model, batch and precision for both (fresh Trainer each). The baseline is plain PyTorch:
    # default (NCHW) memory format; ours uses its configured channels_last.
    plain = dataclasses.replace(cfg, channels_last=False, compile=False)
    base = baseline_images_per_s(Trainer(plain, ds, keep), x, y, a.iters, a.workers)
    tr = Trainer(cfg, ds, keep)
    ours = ours_images_per_s(tr, a.iters)
    print(f"baseline (DataLoader + torchvision transforms, {a.workers} workers): {base:9.1f} images/s")
    print(f"ours (on-device uint8 pipeline, {tr.precision}):                  {ours:9.1f} images/s")
    print(f"ratio ours / baseline: {ours / base:.2f}x")
    fp32 = None
    if tr.precision != "fp32":  # what the narrower type buys, in the same run: ours again in fp32 (--no-amp)
        fp32 = ours_images_per_s(Trainer(dataclasses.replace(cfg, amp=False), ds, keep), a.iters)
        print(f"ours in fp32 (--no-amp): {fp32:9.1f} images/s; {tr.precision} / fp32: {ours / fp32:.2f}x")
    return {"baseline_images_per_s": base, "ours_images_per_s": ours, "ratio": ours / base, "ours_fp32_images_per_s": fp32,
            "precision": tr.precision, "compile": a.compile,
            "channels_last": a.channels_last, "batch_size": a.batch_size, "arch": f"{a.arch}-{a.layers}"}


@cli_main
def main(argv=None) -> dict:
    return measure(parser().parse_args(argv))


if __name__ == "__main__":
    main()
