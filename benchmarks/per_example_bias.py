#!/usr/bin/env python
"""How much of the per-example stage's "dense memorisation vs change in exposure" correlation is shared noise
(docs/benchmarks.md, "Which examples pruning exposes").

For a pair (pruned P, dense D) the stage correlates mem_D(x) with exposure_P(x) - exposure_D(x), both D terms from
the same dense models. Their sampling noise is shared: a dense model set that happens to fit x better when x is IN
raises mem_D(x) and exposure_D(x) together, so the change falls where mem rises even when pruning does nothing
(regression to the mean). This script splits the dense models (target left out) into two halves h, h' and reports,
per pair, averaged over both assignments:
  shared      rho(mem_D[h],  exposure_P - exposure_D[h])  (the stage's estimator, at half the dense models)
  cross-fit   rho(mem_D[h'], exposure_P - exposure_D[h])  (memorisation from models the change never saw)
  null        rho(mem_D[h],  exposure_D[h'] - exposure_D[h])  (no pruning at all: the true value is 0 here)
P's exposure uses all its models in every row. A cross-fit rho near the shared one means the correlation is
pruning's; a null rho near the shared one means it is noise.

  python benchmarks/per_example_bias.py --runs-dir runs [--pairs static_0.5 dpf_0.9 ...]
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from analysis import per_example as pe
from analysis.stage import find_experiment_dirs, load_config, used_models


def halves(models: list[int]) -> tuple[list[int], list[int]]:
    return models[0::2], models[1::2]


def mem_exp(c, models: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rows = c.rows(models)
    keep = c.sig.keep[rows]
    return (pe.memorisation(c.preds[rows] == c.sig.labels, keep).mem,
            pe.exposure(c.phis[rows], keep).exposure)


def rho(x, y) -> float:
    return pe.rank_correlation(x, y, n_boot=0)["rho"]


def pair_rows(p, d, models: list[int]) -> dict:
    _, exp_p = mem_exp(p, models)
    mem_full, exp_full = mem_exp(d, models)
    h = halves(models)
    (mem0, exp0), (mem1, exp1) = mem_exp(d, h[0]), mem_exp(d, h[1])
    shared = np.mean([rho(mem0, exp_p - exp0), rho(mem1, exp_p - exp1)])
    cross = np.mean([rho(mem1, exp_p - exp0), rho(mem0, exp_p - exp1)])
    null = np.mean([rho(mem0, exp1 - exp0), rho(mem1, exp0 - exp1)])
    full = pe.rank_correlation(mem_full, exp_p - exp_full, n_boot=1000)
    return {"full": full["rho"], "full_ci": (full["ci_low"], full["ci_high"]), "shared": shared, "cross": cross,
            "null": null}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", required=True)
    ap.add_argument("--pairs", nargs="+", default=None, help="pruned configurations to pair with dense (default: all)")
    ap.add_argument("--leave-out", type=int, default=0, help="the attacks' target, left out as the stage does")
    args = ap.parse_args(argv)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    t0 = time.perf_counter()
    cfgs = {c.name: c for c in (load_config(e) for e in find_experiment_dirs(args.runs_dir))}
    dense = cfgs.pop("dense")
    names = args.pairs or sorted(cfgs)
    print(f"{'pair':<22} {'stage rho [95% CI]':<28} {'shared (half)':>14} {'cross-fit':>10} {'null':>8}")
    for name in names:
        models = used_models([cfgs[name], dense], args.leave_out)
        r = pair_rows(cfgs[name], dense, models)
        lo, hi = r["full_ci"]
        print(f"{name + ' - dense':<22} {r['full']:+.3f} [{lo:+.3f}, {hi:+.3f}]{'':<7} {r['shared']:>+14.3f} "
              f"{r['cross']:>+10.3f} {r['null']:>+8.3f}")
    print(f"({len(names)} pairs, {time.perf_counter() - t0:.1f} s; halves of models {models} by position)")


if __name__ == "__main__":
    main()
