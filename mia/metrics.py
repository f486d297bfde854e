"""One metrics function for every attack (REFERENCE.md section 5).

TPR at an FPR level is the largest TPR among ROC points whose FPR <= level (as in the LiRA reference
code). A level below 1 / #non-members cannot be measured: `min_fpr` says where that floor is and
`tpr_at_*_below_floor` flags it.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

FPR_LEVELS = {"tpr_at_1pct_fpr": 1e-2, "tpr_at_0.1pct_fpr": 1e-3, "tpr_at_0.01pct_fpr": 1e-4}
MIN_NONMEMBERS_FOR_0_01 = 10_000


def best_threshold(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Threshold t maximising balanced accuracy of the rule `score >= t` (ties broken towards the
    largest t). Used for every calibration: per-class thresholds on shadows, pseudo-target runs."""
    scores, is_member = np.asarray(scores, np.float64), np.asarray(is_member, bool)
    n_in, n_out = is_member.sum(), (~is_member).sum()
    if n_in == 0 or n_out == 0:
        return float(np.median(scores)) if len(scores) else 0.0
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], is_member[order]
    tpr = np.cumsum(m) / n_in          # predicting "member" for the first k+1 sorted scores
    fpr = np.cumsum(~m) / n_out
    last = np.r_[s[1:] != s[:-1], True]  # only cut between distinct scores
    k = np.flatnonzero(last)[np.argmax((tpr - fpr)[last])]
    bal = 0.5 * (1 + tpr[k] - fpr[k])
    return float(s[k]) if bal > 0.5 else float(np.inf)  # no useful cut: predict nobody a member


def roc_points(fpr: np.ndarray, tpr: np.ndarray, n: int = 300) -> dict:
    """Down-sample an ROC curve on a log-spaced FPR grid, so log-log plots stay faithful at low FPR."""
    grid = np.unique(np.r_[0.0, np.logspace(-5, 0, n)])
    idx = np.searchsorted(fpr, grid, side="right") - 1
    return {"fpr": grid.tolist(), "tpr": tpr[np.clip(idx, 0, len(tpr) - 1)].tolist()}


def compute_metrics(scores: np.ndarray, is_member: np.ndarray, threshold: float | None = None) -> dict:
    scores = np.asarray(scores, np.float64)
    is_member = np.asarray(is_member, bool)
    if not np.isfinite(scores).all():
        scores = np.nan_to_num(scores, nan=-np.inf, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)
    n_out = int((~is_member).sum())
    fpr, tpr, _ = roc_curve(is_member, scores)
    out = {"auc": float(roc_auc_score(is_member, scores)), "advantage": float(np.max(tpr - fpr)),
           "min_fpr": 1.0 / max(n_out, 1), "num_members": int(is_member.sum()), "num_nonmembers": n_out}
    for key, level in FPR_LEVELS.items():
        if level == 1e-4 and n_out < MIN_NONMEMBERS_FOR_0_01:
            continue
        out[key] = float(tpr[fpr <= level].max())
        out[f"{key}_below_floor"] = level < out["min_fpr"]
    if threshold is not None:
        pred = scores >= threshold
        tpr_t = pred[is_member].mean() if is_member.any() else 0.0
        tnr_t = (~pred[~is_member]).mean() if n_out else 0.0
        out["accuracy"] = float(0.5 * (tpr_t + tnr_t))
        out["threshold"] = float(threshold)
    out["roc"] = roc_points(fpr, tpr)
    return out
