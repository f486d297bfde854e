#!/usr/bin/env python
"""Attack speed: every attack of both suites on one synthetic configuration (default: a 50,000-example
pool, target + 16 shadows, 2 queries, 10 classes), each timed with its threshold calibration and
metrics, plus LiRA's vectorized implementation against a per-example Python loop (the reference
code's structure) on a subsample.

  python benchmarks/attack_speed.py                                  # the issue's configuration, CPU
  python benchmarks/attack_speed.py --n 10000 --attacks lira rmia confidence --device cuda
  python benchmarks/attack_speed.py --learned                         # the five learned attacks only

time_s is wall time; cpu_s is this process's CPU time, which moves far less than wall time when
other jobs share the cores (the learned attacks run one torch thread on CPU, so on CPU it is their
work; on CUDA it is the host side only). Compare runs on cpu_s when the load average is high.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import scipy.stats

from benchmarks.common import machine
from artifacts.rundir import ModelStack, Signals
from mia.attacks import (ATTACKS, AttackSettings, balanced_shadows, gaussian_fit, global_sigma, lira_online,
                         per_example, per_model, phi)
from mia.evaluate import attack_input, attack_target, shadow_rows
from tests.mia_synthetic import synthetic_signals


def lira_loop(phi_s: np.ndarray, sel_in: np.ndarray, sel_out: np.ndarray, phi_t: np.ndarray, sd: float,
              cols: np.ndarray) -> np.ndarray:
    """Per-example baseline with the reference code's structure (medians of the selected IN and OUT
    shadows, one fixed sd given), over the examples `cols`."""
    out = []
    for j in cols:
        mu_in = np.median(phi_s[sel_in[:, j], j], 0)
        mu_out = np.median(phi_s[sel_out[:, j], j], 0)
        out.append((scipy.stats.norm.logpdf(phi_t[j], mu_in, sd) - scipy.stats.norm.logpdf(phi_t[j], mu_out, sd)).mean())
    return np.array(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="pool size")
    p.add_argument("--shadows", type=int, default=16, help="shadow models (plus the target)")
    p.add_argument("--queries", type=int, default=2)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--gap", type=float, default=1.0, help="membership signal of the synthetic logits (1.0: AUC ~0.6-0.8)")
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS))
    p.add_argument("--learned", action="store_true", help="the learned attacks only (overrides --attacks)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--loop-sample", type=int, default=2000, help="examples for the per-example LiRA loop")
    args = p.parse_args()
    if args.learned:
        args.attacks = [k for k, spec in ATTACKS.items() if "nn_" in spec.settings]  # the nn_* settings: learned

    print(f"machine: {machine()}")
    print(f"load average (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}  (cores shared with other jobs)")
    t = time.perf_counter()
    s = synthetic_signals(args.n, args.shadows, args.queries, args.classes, args.gap, seed=0)
    m = args.shadows + 1
    sig = Signals(Path("synthetic"), {}, list(range(m)), ModelStack(list(s["logits"])), ModelStack(list(s["sensitivity"])),
                  s["keep"], s["labels"], {})
    print(f"signals: N={args.n}, {args.shadows} shadows + target, Q={args.queries}, C={args.classes} "
          f"(generated in {time.perf_counter() - t:.1f} s); device {args.device}\n")

    st = AttackSettings(device=args.device)
    print(f"{'attack':<18}{'time_s':>8}{'cpu_s':>8}{'auc':>8}{'acc':>8}{'tpr@1%':>8}{'tpr@0.1%':>10}  notes")
    total = total_cpu = 0.0
    for name in args.attacks:
        cpu = time.process_time()
        r = attack_target(name, sig, 0, st)
        cpu = time.process_time() - cpu
        total, total_cpu = total + r["time_s"], total_cpu + cpu
        ep = r["info"].get("epochs")
        notes = (f"{len(ep)} model(s), epochs mean {np.mean(ep):.0f} max {max(ep)}" if ep else r["calibration"][:40])
        print(f"{name:<18}{r['time_s']:>8.1f}{cpu:>8.1f}{r['auc']:>8.3f}{r.get('accuracy', float('nan')):>8.3f}"
              f"{r['tpr_at_1pct_fpr']:>8.3f}{r['tpr_at_0.1pct_fpr']:>10.4f}  {notes}")
    print(f"{'total':<18}{total:>8.1f}{total_cpu:>8.1f}   (each attack with its threshold calibration and metrics)\n")

    if "lira" in args.attacks:
        lira_against_loop(sig, st, args.n, args.loop_sample)


def lira_against_loop(sig: Signals, st: AttackSettings, n: int, loop_sample: int) -> None:
    """LiRA: vectorized (whole pool) against the per-example loop (subsample, extrapolated)."""
    inp = attack_input(sig, 0, shadow_rows(sig, 0))
    t = time.perf_counter()
    vec = lira_online(inp, st).scores
    t_vec = time.perf_counter() - t
    phi_s, phi_t = per_model(phi, inp.shadow_logits, inp.labels), per_example(phi, inp.target_logits, inp.labels)
    sel_in, sel_out, k_in, k_out = balanced_shadows(inp.shadow_keep, st.seed)
    sd = global_sigma(phi_s, [gaussian_fit(phi_s, sel_in, k_in), gaussian_fit(phi_s, sel_out, k_out)])
    cols = np.random.default_rng(0).choice(n, min(loop_sample, n), replace=False)
    t = time.perf_counter()
    loop = lira_loop(phi_s, sel_in, sel_out, phi_t, sd, cols)
    t_loop = (time.perf_counter() - t) * n / len(cols)
    print(f"LiRA online alone (whole pool, phi included): {t_vec:.2f} s vectorized; per-example loop (phi and sd "
          f"precomputed) {t_loop:.1f} s extrapolated from {len(cols)} examples: x{t_loop / t_vec:.0f}; "
          f"max |score difference| {np.abs(vec[cols] - loop).max():.1e}")


if __name__ == "__main__":
    main()
