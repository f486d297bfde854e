"""Per-example statistics of one study (docs/attacks.md, "Which examples pruning exposes"): pure functions
over arrays [models, pool], no files.

- memorisation (Feldman & Zhang 2020, the subsampling estimator): mem = P[correct | IN] - P[correct | OUT]
  over a configuration's models, with its standard error from the IN / OUT counts;
- exposure: the standardised gap between an example's IN and OUT logit-scaled confidences (LiRA's phi)
  over the configuration's models, and a per-example test of how a pair of configurations moves it
  (model i of both trained on the same subset: the test works on their per-model differences);
- pruning-identified exemplars (Hooker et al. 2019): modal prediction over the pruned models differs from
  the modal prediction over the dense models;
- the summaries: a rank correlation with a bootstrap interval, a two-group difference with an interval.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy.stats import rankdata
from scipy.stats import t as student_t

from mia.attacks import per_model, phi
from analysis.bootstrap import benjamini_hochberg


# -- the per-model signals ------------------------------------------------------------------------------

def _pred0(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return z[:, 0].argmax(-1)


def _phi_mean(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return phi(z, y).mean(-1)


def predictions(logits: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """int64 [M, N]: each model's predicted class on query 0 (the unaugmented image)."""
    return per_model(_pred0, logits, labels).astype(np.int64)


def logit_confidence(logits: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """float64 [M, N]: each model's phi = log(p_y / (1 - p_y)) (mia.attacks.phi, stable), mean over queries."""
    return per_model(_phi_mean, logits, labels)


# -- memorisation ---------------------------------------------------------------------------------------

class Memorisation(NamedTuple):
    mem: np.ndarray    # [N] P[correct | IN] - P[correct | OUT]
    se: np.ndarray     # [N] its standard error (NaN with fewer than 2 IN or 2 OUT models)
    p_in: np.ndarray   # [N]
    p_out: np.ndarray  # [N]
    n_in: np.ndarray   # [N] int
    n_out: np.ndarray  # [N] int


def _mean_var(x: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: count, mean and unbiased variance (ddof 1; NaN below 2) of x [M, N] over the rows sel [M, N]."""
    n = sel.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(sel, x, 0.0).sum(0) / n
        var = np.where(sel, (x - mean) ** 2, 0.0).sum(0) / (n - 1)
    return n, mean, np.where(n > 1, var, np.nan)


def memorisation(correct: np.ndarray, keep: np.ndarray) -> Memorisation:
    """mem(x) = mean correctness over the models that trained on x minus over those that did not
    (correct, keep: bool [M, N], the same models). se^2 = s_in^2 / n_in + s_out^2 / n_out with the
    unbiased Bernoulli variances s^2 = p (1 - p) n / (n - 1): an always-correct example has mem 0, se 0."""
    c, k = np.asarray(correct, np.float64), np.asarray(keep, bool)
    n_in, p_in, v_in = _mean_var(c, k)
    n_out, p_out, v_out = _mean_var(c, ~k)
    return Memorisation(p_in - p_out, np.sqrt(v_in / n_in + v_out / n_out), p_in, p_out, n_in, n_out)


# -- exposure -------------------------------------------------------------------------------------------

class Exposure(NamedTuple):
    exposure: np.ndarray  # [N] (mean_in - mean_out) / pooled sd
    gap: np.ndarray       # [N] mean_in - mean_out of phi
    mean_in: np.ndarray
    mean_out: np.ndarray
    sd: np.ndarray        # [N] pooled within-group sd


def exposure(phis: np.ndarray, keep: np.ndarray) -> Exposure:
    """The standardised IN - OUT gap of an example's logit-scaled confidence over a configuration's models
    (phis float [M, N], keep bool [M, N]): Cohen's d with the pooled variance. It is the separation LiRA's
    per-example Gaussians see (with equal variances, the ideal per-example test's AUC is Phi(d / sqrt 2)),
    needs no target, and does not grow with the number of models (a t statistic would). NaN where the
    pooled sd is 0 or a group has no model."""
    x, k = np.asarray(phis, np.float64), np.asarray(keep, bool)
    n_in, m_in, v_in = _mean_var(x, k)
    n_out, m_out, v_out = _mean_var(x, ~k)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((np.nan_to_num(v_in) * (n_in - 1) + np.nan_to_num(v_out) * (n_out - 1)) / (n_in + n_out - 2))
        gap = m_in - m_out
        d = np.where(sd > 0, gap / sd, np.nan)
    return Exposure(d, gap, m_in, m_out, sd)


class Change(NamedTuple):
    change: np.ndarray      # [N] exposure of A - exposure of B
    gap_change: np.ndarray  # [N] the IN - OUT gap of phi_A - phi_B (what is tested)
    t: np.ndarray           # [N] Welch t of gap_change
    df: np.ndarray          # [N] Welch-Satterthwaite degrees of freedom
    p: np.ndarray           # [N] two-sided p-value (NaN where undefined)
    p_adjusted: np.ndarray  # [N] Benjamini-Hochberg over the pool
    rose: np.ndarray        # [N] bool: significant after the correction, gap grew
    fell: np.ndarray        # [N] bool: significant, gap shrank


def exposure_change(phi_a: np.ndarray, phi_b: np.ndarray, keep: np.ndarray, fdr: float = 0.05) -> Change:
    """How configuration A moves each example's exposure relative to B (phi_a, phi_b [M, N] of the same
    model indices: model i of both trained on keep[i]). The test per example: D_i = phi_A,i - phi_B,i,
    Welch's t of mean_IN(D) - mean_OUT(D). Differencing model i of A and B removes what both share (the
    example's difficulty for that subset), and under the null (A and B expose x alike) D's IN and OUT
    means are equal. Benjamini-Hochberg over the pool's examples at `fdr`: among the examples called
    risen or fallen, at most that share is expected to be false."""
    k = np.asarray(keep, bool)
    d = np.asarray(phi_a, np.float64) - np.asarray(phi_b, np.float64)
    n_in, m_in, v_in = _mean_var(d, k)
    n_out, m_out, v_out = _mean_var(d, ~k)
    a_in, a_out = v_in / n_in, v_out / n_out
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(a_in + a_out)
        t = (m_in - m_out) / se
        df = (a_in + a_out) ** 2 / (a_in ** 2 / (n_in - 1) + a_out ** 2 / (n_out - 1))
    ok = np.isfinite(t) & np.isfinite(df) & (se > 0)
    p = np.full(t.shape, np.nan)
    p[ok] = 2 * student_t.sf(np.abs(t[ok]), df[ok])
    adj = benjamini_hochberg(p)
    sig = adj < fdr  # NaN compares False
    change = exposure(phi_a, k).exposure - exposure(phi_b, k).exposure
    return Change(change, m_in - m_out, np.where(ok, t, np.nan), np.where(ok, df, np.nan), p, adj,
                  sig & (t > 0), sig & (t < 0))


# -- pruning-identified exemplars ------------------------------------------------------------------------

def modal_prediction(preds: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 [N]: the most frequent prediction over the models (preds [M, N]); a tie goes to the smallest
    class index (deterministic; Hooker et al. do not say)."""
    p = np.asarray(preds, np.int64)
    counts = np.zeros((num_classes, p.shape[1]), np.int64)
    np.add.at(counts, (p, np.broadcast_to(np.arange(p.shape[1]), p.shape)), 1)
    return counts.argmax(0)


def pies(preds_pruned: np.ndarray, preds_dense: np.ndarray, num_classes: int) -> np.ndarray:
    """bool [N]: pruning-identified exemplars (Hooker et al. 2019): the modal prediction over the pruned
    population differs from the modal prediction over the dense population."""
    return modal_prediction(preds_pruned, num_classes) != modal_prediction(preds_dense, num_classes)


# -- summaries with intervals ---------------------------------------------------------------------------

def _percentile_ci(reps: np.ndarray, level: float) -> tuple[float, float]:
    r = reps[np.isfinite(reps)]
    if len(r) < 2:
        return np.nan, np.nan
    a = (1 - level) / 2
    return float(np.quantile(r, a)), float(np.quantile(r, 1 - a))


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair of x, y [B, n] (average ranks for ties); NaN for a constant row."""
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(1) / np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))


def rank_correlation(x: np.ndarray, y: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                     chunk: int = 100) -> dict:
    """Spearman's rho of x and y over the examples where both are finite, with a percentile bootstrap
    interval over the examples: {rho, ci_low, ci_high, n}."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3:
        return {"rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": n}
    rho = float(_spearman_rows(x[None], y[None])[0])
    rng = np.random.default_rng([seed, 0x5EA7])
    reps = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, (min(chunk, n_boot - start), n))
        reps.append(_spearman_rows(x[idx], y[idx]))
    lo, hi = _percentile_ci(np.concatenate(reps) if reps else np.array([]), level)
    return {"rho": rho, "ci_low": lo, "ci_high": hi, "n": n}


def cross_fit_correlation(x: tuple[np.ndarray, np.ndarray], y: tuple[np.ndarray, np.ndarray], n_boot: int = 1000,
                          seed: int = 0, level: float = 0.95, chunk: int = 100) -> dict:
    """Spearman's rho of a per-example statistic with another, each estimated from a disjoint half of the
    models: x = (x from half 0, x from half 1), y likewise; rho = mean(rho(x_1, y_0), rho(x_0, y_1)).

    Why: dense memorisation and a change in exposure that subtracts the dense exposure, estimated from the same
    dense models, share those models' sampling noise (an IN draw that fits x well raises both), which pulls rho
    below zero when nothing changes (benchmarks/per_example_bias.py measures it). Pairing each half's x with the
    other half's y removes the shared noise; the noisier half-size estimates pull rho towards 0 instead, so the
    cross-fitted rho is conservative. Percentile bootstrap over the examples (one resample for all four arrays):
    {rho, ci_low, ci_high, n}."""
    x0, x1, y0, y1 = (np.asarray(a, np.float64) for a in (*x, *y))
    ok = np.isfinite(x0) & np.isfinite(x1) & np.isfinite(y0) & np.isfinite(y1)
    x0, x1, y0, y1 = x0[ok], x1[ok], y0[ok], y1[ok]
    n = len(x0)
    if n < 3:
        return {"rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": n}

    def both(idx):
        return (_spearman_rows(x1[idx], y0[idx]) + _spearman_rows(x0[idx], y1[idx])) / 2

    rho = float(both(np.arange(n)[None])[0])
    rng = np.random.default_rng([seed, 0xC405])
    reps = [both(rng.integers(0, n, (min(chunk, n_boot - s), n))) for s in range(0, n_boot, chunk)]
    lo, hi = _percentile_ci(np.concatenate(reps) if reps else np.array([]), level)
    return {"rho": rho, "ci_low": lo, "ci_high": hi, "n": n}


def group_difference(values: np.ndarray, group: np.ndarray, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean of `values` in the group minus the rest (finite values only), with a percentile bootstrap
    interval resampling each side separately: {difference, group_mean, rest_mean, ci_low, ci_high,
    n_group, n_rest}. NaN with an empty side."""
    v, g = np.asarray(values, np.float64), np.asarray(group, bool)
    ok = np.isfinite(v)
    a, b = v[ok & g], v[ok & ~g]
    out = {"difference": np.nan, "group_mean": np.nan, "rest_mean": np.nan, "ci_low": np.nan, "ci_high": np.nan,
           "n_group": len(a), "n_rest": len(b)}
    if not len(a) or not len(b):
        return out
    rng = np.random.default_rng([seed, 0x61F0])
    reps = np.array([a[rng.integers(0, len(a), len(a))].mean() - b[rng.integers(0, len(b), len(b))].mean()
                     for _ in range(n_boot)])
    lo, hi = _percentile_ci(reps, level)
    return {**out, "difference": float(a.mean() - b.mean()), "group_mean": float(a.mean()), "rest_mean": float(b.mean()),
            "ci_low": lo, "ci_high": hi}
