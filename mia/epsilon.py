"""What an attack proves about epsilon: an empirical lower bound (Jagielski, Ullman & Oprea, NeurIPS 2020;
Nasr et al., S&P 2021), one per attack and target.

A mechanism that is (eps, delta)-differentially private bounds every membership test: for any decision
rule, TPR <= e^eps FPR + delta and TNR <= e^eps FNR + delta. Turned around, a rule measured at (TPR, FPR)
proves
    eps >= max( log((TPR - delta) / FPR),  log((1 - FPR - delta) / (1 - TPR)) ),
and the figure is a valid lower bound only if TPR is replaced by a lower and FPR by an upper confidence
bound: Clopper-Pearson intervals (exact binomial, scipy.stats.beta) at two-sided level 95% each, so each
bound holds with probability 97.5% and both together with at least 95% (union bound). The rule is
`score >= threshold` with the threshold calibrated on the shadows (a shadow playing the target:
mia/evaluate.py), never on the target's membership, so the target's counts are a fresh test of it.
A bound that is not positive gives 0: the attack proves nothing.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta

from defenses.dp import default_delta  # the accountant's delta: the bound is stated at the same delta

CONFIDENCE = 0.95  # of each Clopper-Pearson interval (two-sided)


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact binomial interval for a rate observed as k successes out of n (0 and 1 at the edges)."""
    a = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def _log_ratio(num: float, den: float) -> float:
    return math.log(num / den) if num > 0 and den > 0 else 0.0


def epsilon_lower_bound(predicted: np.ndarray, is_member: np.ndarray, delta: float | None = None,
                        confidence: float = CONFIDENCE) -> dict:
    """eps_lower_bound (>= 0) of the rule `predicted` (bool [n]: member predicted) judged by is_member, with
    what it rests on: eps_delta (default: default_delta(#members)), eps_tpr_low, eps_fpr_high."""
    pred, m = np.asarray(predicted, bool), np.asarray(is_member, bool)
    n_in, n_out = int(m.sum()), int((~m).sum())
    delta = default_delta(n_in) if delta is None else float(delta)
    tpr_low = clopper_pearson(int(pred[m].sum()), n_in, confidence)[0]
    fpr_high = clopper_pearson(int(pred[~m].sum()), n_out, confidence)[1]
    eps = max(0.0, _log_ratio(tpr_low - delta, fpr_high), _log_ratio(1 - fpr_high - delta, 1 - tpr_low))
    return {"eps_lower_bound": eps, "eps_delta": delta, "eps_tpr_low": tpr_low, "eps_fpr_high": fpr_high}
