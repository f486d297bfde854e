#!/usr/bin/env python
"""Paired-comparison speed: the paired bootstrap (analysis/bootstrap.py) of one pair of configurations, every
attack at once (default: 12 attacks, a 50,000-example pool, one target, 1,000 resamples, AUC and TPR at
1% / 0.1% FPR), on synthetic scores (half of the attacks with heavily tied scores, as threshold attacks
give). Baseline in the same run: the plain way, compute_metrics (sklearn's roc_auc_score + roc_curve)
on A and B for each resample, timed on a few resamples and extrapolated; its values are also checked
against the vectorised replicates.

  python benchmarks/compare_speed.py
  python benchmarks/compare_speed.py --n 10000 --attacks 3 --boot 200 --targets 4
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmarks.common import machine
from analysis.bootstrap import METRICS, compare_attacks, resample_weights
from mia.metrics import compute_metrics


def synthetic(n: int, attacks: int, targets: int, seed: int = 0):
    """Per-target membership (balanced) and, per attack, A's and B's scores sharing a per-example
    component (paired); B leaks slightly less. Odd attacks are rounded to 2 decimals (ties)."""
    rng = np.random.default_rng(seed)
    members = [rng.permutation(n) < n // 2 for _ in range(targets)]
    sa, sb = {}, {}
    for k in range(attacks):
        gap = rng.uniform(0.2, 1.5)
        shared = [rng.normal(0, 1, n) + gap * m for m in members]
        a = [s + rng.normal(0, 0.5, n) for s in shared]
        b = [s - 0.1 * m + rng.normal(0, 0.5, n) for s, m in zip(shared, members)]
        if k % 2:
            a, b = [np.round(x, 2) for x in a], [np.round(x, 2) for x in b]
        sa[f"attack{k}"], sb[f"attack{k}"] = a, b
    return sa, sb, members


def baseline(sa, sb, members, resamples: int, seed: int) -> tuple[float, dict]:
    """compute_metrics on explicitly resampled arrays (target 0, the first `resamples` resamples, the
    first two attacks): seconds per (resample, attack), and the differences for checking."""
    w = next(resample_weights(len(members[0]), resamples, seed, chunk_elems=resamples * len(members[0])))
    attacks = list(sa)[:2]
    diffs = {}
    t = time.perf_counter()
    for r in range(resamples):
        idx = np.repeat(np.arange(len(members[0])), w[r])
        for k in attacks:
            ma, mb = compute_metrics(sa[k][0][idx], members[0][idx]), compute_metrics(sb[k][0][idx], members[0][idx])
            diffs[k, r] = {m: ma[m] - mb[m] for m in METRICS}
    return (time.perf_counter() - t) / (resamples * len(attacks)), diffs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="pool size")
    p.add_argument("--attacks", type=int, default=12)
    p.add_argument("--targets", type=int, default=1)
    p.add_argument("--boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--baseline-resamples", type=int, default=4)
    args = p.parse_args()

    print(f"machine: {machine()}")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}  (cores shared with other jobs)")
    sa, sb, members = synthetic(args.n, args.attacks, args.targets)
    print(f"{args.attacks} attacks, {args.targets} target(s), N = {args.n}, {args.boot} paired resamples, metrics {METRICS}")

    t = time.perf_counter()
    res = compare_attacks(sa, sb, members, n_boot=args.boot, seed=0)
    fast = time.perf_counter() - t
    per_base, diffs = baseline(sa, sb, members, args.baseline_resamples, seed=0)
    slow = per_base * args.boot * args.attacks * args.targets

    if args.targets == 1:  # one target: replicate r is exactly target 0's resample r
        err = max(abs(res[k][m]["replicates"][r] - d[m]) for (k, r), d in diffs.items() for m in METRICS)
        print(f"check: max |vectorised - compute_metrics| over {len(diffs)} baseline resamples = {err:.1e}")
    for k in list(res)[:3]:
        r = res[k]["auc"]
        print(f"  {k}: AUC A - B = {r['difference']:+.4f}  [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]")
    print(f"vectorised paired bootstrap: {fast:.1f} s for all {args.attacks} attacks "
          f"({fast / args.attacks:.2f} s per attack)")
    print(f"baseline (compute_metrics per resample, {per_base * 1e3:.0f} ms per resample and attack, "
          f"extrapolated from {args.baseline_resamples} resamples x 2 attacks): {slow:.0f} s  -> x{slow / fast:.0f}")


if __name__ == "__main__":
    main()
