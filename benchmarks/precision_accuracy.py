#!/usr/bin/env python
"""Does bf16 autocast cost accuracy? The same recipe trained in fp32 (--no-amp) and under bf16 autocast
(--amp, on a CPU with native bf16 or a GPU from compute capability 8.0), a few seeds each, one model at a
time; prints each model's test accuracy and each precision's mean and spread.

  python benchmarks/precision_accuracy.py --data-path ../shared/data/cifar10_jpeg_q75.npz --pool-size 2000 --epochs 15

Any other run_experiment.py flag passes through (e.g. --prune --prune-method dpf --sparsity 0.9).
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np

from benchmarks.common import machine
from run_experiment import parse_config, run


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    a, rest = p.parse_known_args(argv)
    print(f"machine: {machine()}")
    acc: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as runs:
        for seed in a.seeds:
            for amp in ("--no-amp", "--amp"):  # interleaved: a change of machine load hits both alike
                args = ["--dataset", "npz", *rest, "--seed", str(seed), amp, "--runs-dir", f"{runs}/{seed}{amp}",
                        "--mia-queries", "1", "--sens-draws", "1"]  # signals are not measured here
                [s] = run(parse_config(args))
                acc.setdefault(s["precision"], []).append(s["test_acc"])
                print(f"seed {seed} {s['precision']}: test accuracy {s['test_acc']:.4f} "
                      f"({s['images_per_s']:.0f} images/s)", flush=True)
    for prec, v in acc.items():
        print(f"{prec}: mean {np.mean(v):.4f}, std {np.std(v, ddof=1) if len(v) > 1 else 0:.4f} over {len(v)} seeds")
    return acc


if __name__ == "__main__":
    main()
