#!/usr/bin/env python
"""What a resumable state costs (training/resume.py): its size and the time to write one, for a dense and a
DPF model (DPF adds its dense weights), after one training epoch so that momentum and a best snapshot exist.
Compare with an epoch's time (train_throughput.py) to see the share of a run spent writing.

  python benchmarks/resume_cost.py                       # ResNet-20, CIFAR shapes, CPU
  python benchmarks/resume_cost.py --arch wideresnet --layers 28
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from benchmarks.common import cifar_like, machine
from configs.config import ExperimentConfig
from data.datasets import from_arrays
from training import resume
from training.trainer import Trainer

METHODS = {"dense": {}, "dpf": dict(method="dpf", sparsity=0.9, target_epoch=1, freeze_epoch=2)}


class _Bar:
    def update(self, n):
        pass


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet")
    p.add_argument("--layers", type=int, default=20)
    p.add_argument("--writes", type=int, default=5, help="writes timed per method (the median is printed)")
    a = p.parse_args(argv)
    x, y, source = cifar_like(256)
    ds = from_arrays("bench", x, y, x[:256], y[:256])
    print(f"machine: {machine()}\ndata: {source}; model {a.arch}-{a.layers}")
    out = {}
    for method, kw in METHODS.items():
        cfg = ExperimentConfig(dataset="npz", data_path="-", arch=a.arch, layers=a.layers, batch_size=128, epochs=3,
                               device="cpu", amp=False, **kw).resolved()
        tr = Trainer(cfg, ds, np.ones(len(y), bool))
        tr.train_epoch(0, _Bar())
        m = tr.seats[0]
        m.best, m.best_key, tr.epochs_done = m.snapshot(1), (0.0, 0.0), 1
        with tempfile.TemporaryDirectory(dir=".") as d:  # the disk the runs directory is on, not a tmpfs
            times = []
            for _ in range(a.writes):
                t = time.perf_counter()
                resume.save(tr, [d])
                times.append(time.perf_counter() - t)
            size = os.path.getsize(os.path.join(d, "resume.pth"))
        out[method] = {"mib": size / 2**20, "write_s": float(np.median(times))}
        print(f"{method}: {size / 2**20:.1f} MiB, {1000 * np.median(times):.0f} ms a write (median of {a.writes})")
    return out


if __name__ == "__main__":
    main()
