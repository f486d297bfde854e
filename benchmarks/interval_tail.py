#!/usr/bin/env python
"""The tail of the crossed interval's null p-values: the report's corrected marks read
p-values near 0.05 / #cells, where a coverage check (the 5% tail) sees nothing. Simulated studies under
the linear stand-in of tests/test_intervals.py: a paired difference is, to first order, a mean over the
pool's examples of per-(example, target) contributions (the AUC's Hajek projection), so each null is the
crossed random-effects model Y[i, t] = a_i + b_t + e_it (a: examples a configuration finds easy, b: the
seed of model t, e: each model's own noise on each example), every study's replicates one matrix product
with the real resample weights, and the interval the real one (bootstrap.interval).

Two df rules side by side, on the same studies:
- now: Satterthwaite with E[between] floored at the targets' own example noise (bootstrap.crossed_variance);
- before: Satterthwaite with the plug-in between-target variance (crossed_variance's floor_df=False).

  python benchmarks/interval_tail.py                     # 20,000 studies a cell, ~2 min on 2 idle cores
  python benchmarks/interval_tail.py --sims 4000         # a quick look
"""
from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from benchmarks.common import machine
from analysis import bootstrap as bs
from utils.errors import UsageError, cli_main

SCENARIOS = {  # standard deviations of a (examples, per configuration), b (model seed), e (model x example)
    "independent noise": (0.0, 0.0, 1.0),
    "weak seeds": (0.0, 0.03, 1.0),  # seeds about as large as each model's own noise over N = 1,000
    "model-level variation": (0.0, 0.1, 1.0),
    "example vulnerability": (1.0, 0.0, 1.0),
}
N, B = 1000, 200  # pool examples, resamples
CROSSED = bs.crossed_variance  # the rule in use (floored df), put back after "before" is swapped in
RULES = {"before": functools.partial(CROSSED, floor_df=False), "now": CROSSED}


def null_intervals(sds: tuple[float, float, float], targets: int, seed: int, sims: int, n: int = N,
                   n_boot: int = B, chunk: int = 1000) -> list[dict]:
    """bootstrap.interval of `sims` simulated studies with standard deviations sds = (a, b, e), each
    centred on what it claims to cover (an interval is translation-equivariant): with several targets
    the population value 0; with one, that model pair's own value b (it covers examples only). So a hit
    is ci_low <= 0 <= ci_high, and p_value is the p-value of the truth. Studies in chunks (memory)."""
    sa, sb, se = sds
    rng = np.random.default_rng(seed)
    w = next(bs.resample_weights(n, n_boot, seed=seed, chunk_elems=n * n_boot)).astype(np.float64)
    out = []
    for start in range(0, sims, chunk):
        k = min(chunk, sims - start)
        b = sb * rng.normal(size=(k, 1, targets))
        y = sa * rng.normal(size=(k, n, 1)) + b + se * rng.normal(size=(k, n, targets))
        reps = (w @ y.transpose(1, 0, 2).reshape(n, -1) / n).reshape(n_boot, k, targets).transpose(1, 2, 0)
        point = y.mean(axis=1)
        truth = b[:, 0, :1] if targets == 1 else np.zeros((k, 1))
        out += [bs.interval(bs.Replicates(point[s] - truth[s], reps[s] - truth[s, :, None])) for s in range(k)]
    return out


def tail(results: list[dict]) -> dict:
    p = np.array([r["p_value"] for r in results])
    return {"coverage": float(np.mean(p >= 0.05)), "p<0.01": float(np.mean(p < 0.01)), "p<0.001": float(np.mean(p < 0.001))}


@cli_main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sims", type=int, default=20_000, help="simulated studies per cell")
    p.add_argument("--targets", type=int, nargs="+", default=[3, 9])
    args = p.parse_args()
    if args.sims < 1 or min(args.targets) < 1:
        raise UsageError(f"--sims and every --targets must be >= 1, got {args.sims} and {args.targets}")
    print(machine())
    print(f"pool {N}, {B} resamples, {args.sims} studies a cell; expected: coverage 0.95, P(p<0.01) 0.01, P(p<0.001) 0.001")
    print("| scenario | targets | coverage before / now | P(p < 0.01) before / now | P(p < 0.001) before / now |")
    print("|---|---|---|---|---|")
    t0 = time.perf_counter()
    for i, (name, sds) in enumerate(SCENARIOS.items()):
        for t in args.targets:
            res = {}
            for rule, fn in RULES.items():
                bs.crossed_variance = fn  # interval() looks it up at call time
                try:
                    res[rule] = tail(null_intervals(sds, t, seed=10 * t + i, sims=args.sims))
                finally:
                    bs.crossed_variance = CROSSED
            print(f"| {name} | {t} | " + " | ".join(f"{res['before'][k]:.4f} / {res['now'][k]:.4f}"
                                                  for k in ("coverage", "p<0.01", "p<0.001")) + " |", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
