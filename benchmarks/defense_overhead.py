#!/usr/bin/env python
"""Training time of each defense against undefended training: the real training loop (training.trainer.Trainer,
one model, its own data pipeline) for --epochs on embedded digits, train images per second from fit() (the
per-epoch validation excluded), each defense in turn, repeated --rounds times interleaved to spread machine
noise; the median rate per defense and its ratio to undefended. dp runs as it must (fp32, contiguous memory
format: defenses/dp.py), so it is also compared with an undefended run in those settings ("none, as dp").

  python benchmarks/defense_overhead.py                     # ResNet-20, digits pool 400, batch 32, 8 epochs, CPU
  python benchmarks/defense_overhead.py --dataset cifar10 --pool-size 2000 --batch-size 128 --device cuda
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics

import numpy as np

from benchmarks.common import machine
from configs.config import ExperimentConfig
from data import load_dataset
from defenses import DEFENSES
from training.trainer import Trainer

AS_DP = "none, as dp"  # undefended in dp's settings (fp32, contiguous), the fair baseline of its own cost


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--pool-size", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    return p.parse_args()


def configs(a: argparse.Namespace) -> dict[str, ExperimentConfig]:
    base = ExperimentConfig(dataset=a.dataset, pool_size=a.pool_size, batch_size=a.batch_size, epochs=a.epochs,
                            device=a.device)
    out = {d: dataclasses.replace(base, defense=d).resolved() for d in DEFENSES}
    out[AS_DP] = dataclasses.replace(base, amp=out["dp"].amp, channels_last=out["dp"].channels_last).resolved()
    return out


def main() -> None:
    a = parse()
    cfgs = configs(a)
    ds = load_dataset(cfgs["none"])
    keep = np.arange(len(ds.y_train)) < len(ds.y_train) // 2
    rates: dict[str, list[float]] = {name: [] for name in cfgs}
    for _ in range(a.rounds):
        for name, cfg in cfgs.items():
            rates[name].append(Trainer(cfg, ds, keep).fit()[0]["images_per_s"])
    print(machine())
    print(f"{a.dataset}, pool {a.pool_size} (members {int(keep.sum())}), batch {a.batch_size}, {a.epochs} epochs, "
          f"{a.rounds} rounds; median train images/s and time relative to undefended")
    base = {"none": statistics.median(rates["none"]), AS_DP: statistics.median(rates[AS_DP])}
    for name, r in rates.items():
        ref = AS_DP if name == "dp" else "none"
        m = statistics.median(r)
        print(f"  {name:<16} {m:8.0f} img/s   x{base[ref] / m:5.2f} time vs {ref}   (rounds: {' '.join(f'{v:.0f}' for v in r)})")


if __name__ == "__main__":
    main()
