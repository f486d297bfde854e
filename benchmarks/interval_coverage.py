#!/usr/bin/env python
"""Coverage of the paired 95% interval of delta AUC under simulated nulls, on real AUCs through the
project's bootstrap (analysis/bootstrap.py: bootstrap_attacks, difference), the former scheme and the current one:

- after: the crossed scheme (one example resample shared by every target; variance = shared example
  part + spread over targets, t with Satterthwaite df);
- before: the nested scheme it replaced (each target's own stratified example resamples, targets
  resampled with replacement, a target drawn twice getting two example resamples; percentile interval),
  re-implemented here from the same building blocks (pool_metrics) so the two columns differ in the
  scheme only.

Each simulated study: pool N, a balanced keep matrix over T + shadows models (only the T targets are
scored), configurations A and B exchangeable, so every true difference is 0. Scores of model t of
configuration c on example i: (g + a_ci + b_ct) * member + u_i + e_cti (u: difficulty shared by the
configurations, a: configuration-specific example vulnerability, how much more example i leaks when it
is a member of any of the configuration's models, b: model-level variation of the leak, e: independent
noise). With one target the claim is "this pair of models over the examples": its truth is that pair's
population difference, computed in closed form from b (the AUC of N(g + b, 1 + sa^2 + se^2) against
N(0, 1 + se^2)); with several the truth is 0.

  python benchmarks/interval_coverage.py                      # 200 studies a cell, pool 2,000 (~10 min)
  python benchmarks/interval_coverage.py --sims 40 --n 500    # a quick look
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

from benchmarks.common import machine
from analysis import bootstrap as bs

SCENARIOS = {  # sd of (a: example vulnerability per configuration, b: model-level, e: independent noise)
    "independent noise": (0.0, 0.0, 1.0),
    "model-level variation": (0.0, 0.15, 1.0),
    "example vulnerability": (0.5, 0.0, 1.0),
    "strong example vulnerability": (1.0, 0.0, 0.5),  # the shared part dominates: where nesting under-covers
}
GAP = 0.5  # member shift: AUC about 0.64


def keep_matrix(rng, models: int, n: int) -> np.ndarray:
    """The balanced keep matrix of training/membership.py: every example IN for exactly half the models."""
    return np.argsort(rng.random((models, n)), axis=0) < models // 2


def study(rng, scenario: str, targets: int, n: int):
    """Scores [T, N] of A and B, the membership [T, N], and the true difference (0, or with one target
    the pair's own population difference)."""
    sa, sb, se = SCENARIOS[scenario]
    keep = keep_matrix(rng, max(targets, 2) + 8, n)[:targets]
    u = rng.normal(size=n)
    scores, auc_pop = [], []
    for _ in range(2):
        a, b = sa * rng.normal(size=n), sb * rng.normal(size=(targets, 1))
        scores.append((GAP + a + b) * keep + u + se * rng.normal(size=(targets, n)))
        # population AUC of each model: member N(gap + b, 1 + sa^2 + se^2) against non-member N(0, 1 + se^2)
        auc_pop.append(norm.cdf((GAP + b[:, 0]) / np.sqrt(2 + sa ** 2 + 2 * se ** 2)))
    truth = float(auc_pop[0][0] - auc_pop[1][0]) if targets == 1 else 0.0
    return scores[0], scores[1], keep, truth


def nested_interval(sa, sb, keep, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """The former scheme (docs/benchmarks.md, "Calibrated intervals, multiplicity, floors"): per target its own stratified resamples (members among members,
    non-members among non-members), then targets drawn with replacement, slot j of replicate b taking
    copy (b + j) mod n_boot of its target; percentile interval."""
    t_count = len(keep)
    d = np.empty((t_count, n_boot))
    for t in range(t_count):
        m = keep[t]
        rng = np.random.default_rng([seed, 1, t])
        w_in = np.stack([np.bincount(rng.integers(0, m.sum(), m.sum()), minlength=m.sum()) for _ in range(n_boot)])
        w_out = np.stack([np.bincount(rng.integers(0, (~m).sum(), (~m).sum()), minlength=(~m).sum())
                          for _ in range(n_boot)])
        pa, pb = bs.sort_pool(sa[t], m), bs.sort_pool(sb[t], m)
        d[t] = bs.pool_metrics(pa, w_in, w_out, ("auc",))["auc"] - bs.pool_metrics(pb, w_in, w_out, ("auc",))["auc"]
    draws = np.random.default_rng([seed, 0]).integers(0, t_count, (n_boot, t_count))
    copies = (np.arange(n_boot)[:, None] + np.arange(t_count)[None, :]) % n_boot
    reps = d[draws, copies].mean(axis=1)
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def crossed_interval(sa, sb, keep, n_boot: int, seed: int) -> tuple[float, float]:
    ra = bs.bootstrap_attacks({"x": list(sa)}, list(keep), ("auc",), n_boot, seed)["x"]["auc"]
    rb = bs.bootstrap_attacks({"x": list(sb)}, list(keep), ("auc",), n_boot, seed)["x"]["auc"]
    r = bs.difference(ra, rb)
    return r["ci_low"], r["ci_high"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="pool size")
    p.add_argument("--sims", type=int, default=200, help="simulated studies per cell")
    p.add_argument("--boot", type=int, default=200, help="resamples per interval")
    p.add_argument("--targets", type=int, nargs="+", default=[1, 3, 9])
    p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    args = p.parse_args()
    print(machine())
    print(f"pool {args.n}, {args.sims} studies a cell, {args.boot} resamples; coverage of the 95% interval "
          f"(binomial sd {np.sqrt(0.95 * 0.05 / args.sims):.3f})")
    print("| scenario | targets | before (nested, percentile) | after (crossed, t) | width after / before |")
    print("|---|---|---|---|---|")
    t0 = time.perf_counter()
    for scenario in args.scenarios:
        for t in args.targets:
            rng = np.random.default_rng([list(SCENARIOS).index(scenario), t])
            hit = {"before": 0, "after": 0}
            width = {"before": 0.0, "after": 0.0}
            for sim in range(args.sims):
                sa, sb, keep, truth = study(rng, scenario, t, args.n)
                for name, fn in (("before", nested_interval), ("after", crossed_interval)):
                    low, high = fn(sa, sb, keep, args.boot, sim)
                    hit[name] += low <= truth <= high
                    width[name] += high - low
            print(f"| {scenario} | {t} | {hit['before'] / args.sims:.3f} | {hit['after'] / args.sims:.3f} | "
                  f"{width['after'] / width['before']:.2f} |", flush=True)
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
