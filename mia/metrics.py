"""One metrics function for every attack (docs/attacks.md, "Metrics"), and the one threshold calibration.

Definitions (docs/attacks.md):
- TPR at an FPR level = the largest TPR among ROC points whose FPR <= level (on sklearn's step ROC;
  the LiRA reference code takes the last point with FPR < level, which differs only when a ROC point
  lies exactly on the level).
- A level below 1 / #non-members cannot be measured: `min_fpr` is that floor and
  `<metric>_below_floor` flags each level under it. TPR at 0.01% FPR is reported only with at least
  10,000 non-members.
- `accuracy` = balanced accuracy of the rule `score >= threshold` at a threshold calibrated on
  shadows (never on the target's membership); absent when no threshold could be calibrated.
- `eps_lower_bound`: the epsilon that rule proves (mia/epsilon.py), with the same threshold.
- Inputs are finite: scores with a NaN or an infinity, or a membership that is not 0/1, are refused
  (one line): no metric is computed from them, whatever attack made them.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from mia.epsilon import epsilon_lower_bound
from utils.errors import UsageError

FPR_LEVELS = {"tpr_at_1pct_fpr": 1e-2, "tpr_at_0.1pct_fpr": 1e-3, "tpr_at_0.01pct_fpr": 1e-4}
MIN_NONMEMBERS = {"tpr_at_0.01pct_fpr": 10_000}
ROC_POINTS = 300


def best_threshold(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Threshold t maximising balanced accuracy of `score >= t`, cutting only between distinct scores.
    Ties go to the largest t; when no cut beats chance, t lies just above every score (nobody is a
    member). Always finite, so score - t stays usable as a ranking."""
    s, m = np.asarray(scores, np.float64), np.asarray(is_member, bool)
    n_in, n_out = m.sum(), (~m).sum()
    if len(s) == 0:
        return 0.0
    above_all = float(np.nextafter(s.max(), np.inf))
    if n_in == 0 or n_out == 0:
        return above_all
    order = np.argsort(-s, kind="stable")
    s, m = s[order], m[order]
    gain = np.cumsum(m) * n_out - np.cumsum(~m) * n_in  # (TPR - FPR) n_in n_out, exact in integers, for the first k+1
    cut = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each run of equal scores
    k = cut[np.argmax(gain[cut])]
    return float(s[k]) if gain[k] > 0 else above_all


def group_thresholds(values: np.ndarray, is_member: np.ndarray, groups: np.ndarray, num_groups: int) -> np.ndarray:
    """best_threshold per group (class labels, or all zeros for one global threshold): float64 [num_groups].
    The single calibration mechanism of every attack; a group without rows gets threshold 0."""
    values, is_member, groups = np.ravel(values), np.ravel(is_member), np.ravel(groups)
    thr = np.zeros(num_groups)
    for g in np.unique(groups):
        rows = groups == g
        thr[g] = best_threshold(values[rows], is_member[rows])
    return thr


def roc_points(fpr: np.ndarray, tpr: np.ndarray, n: int = ROC_POINTS) -> dict:
    """Down-sample the step ROC on a log-spaced FPR grid (1e-5 .. 1, plus 0 and the FPR levels), so a log-log plot
    stays faithful at low FPR: TPR(f) = max TPR over points with FPR <= f, as for tpr_at_*."""
    grid = np.unique(np.r_[0.0, np.logspace(-5, 0, n), list(FPR_LEVELS.values())])
    idx = np.searchsorted(fpr, grid, side="right") - 1  # fpr is non-decreasing; last point with FPR <= f
    return {"fpr": grid.tolist(), "tpr": np.maximum.accumulate(tpr)[idx].tolist()}


def check_inputs(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64, is_member bool), refused with one line when a score is NaN or +-inf or a membership
    value is not 0/1: every attack's scores pass here (compute_metrics), so an attack that makes NaN from
    finite signals is named, never scored as chance."""
    scores, member = np.asarray(scores, np.float64), np.asarray(is_member)
    bad = int(scores.size - np.count_nonzero(np.isfinite(scores)))
    if bad:
        raise UsageError(f"{bad} of {scores.size} attack scores are not finite (NaN or inf): no metric is computed from them")
    if member.dtype != bool and not np.isin(member, (0, 1)).all():
        raise UsageError("membership labels must be 0/1 (or bool); got other values")
    return scores, member.astype(bool)


def below_fpr_floor(level, n_nonmembers):
    """The FPR floor, the one rule: an FPR level below 1/#non-members is not measured (the TPR there is the
    TPR with no false positive at all). Elementwise over arrays of levels or counts."""
    return np.asarray(level) < 1.0 / np.asarray(n_nonmembers)


def compute_metrics(scores: np.ndarray, is_member: np.ndarray, threshold: float | None = None,
                    delta: float | None = None) -> dict:
    """auc, advantage, tpr_at_*, min_fpr (+ flags), accuracy and eps_lower_bound (when a threshold is given;
    at `delta`, by default 1/#members rounded down to a power of 10), roc."""
    scores, is_member = check_inputs(scores, is_member)
    n_out = int((~is_member).sum())
    if n_out == 0 or n_out == len(is_member):
        raise ValueError("metrics need both members and non-members")
    fpr, tpr, _ = roc_curve(is_member, scores, drop_intermediate=False)
    out = {"auc": float(roc_auc_score(is_member, scores)), "advantage": float(np.max(tpr - fpr)),
           "min_fpr": 1.0 / n_out, "num_members": int(is_member.sum()), "num_nonmembers": n_out}
    for key, level in FPR_LEVELS.items():
        if n_out < MIN_NONMEMBERS.get(key, 0):
            continue
        out[key] = float(tpr[fpr <= level].max())
        out[f"{key}_below_floor"] = bool(below_fpr_floor(level, n_out))
    if threshold is not None:
        pred = scores >= threshold
        out["accuracy"] = float(0.5 * (pred[is_member].mean() + (~pred[~is_member]).mean()))
        out["threshold"] = float(threshold)
        out.update(epsilon_lower_bound(pred, is_member, delta))
    out["roc"] = roc_points(fpr, tpr)
    return out
