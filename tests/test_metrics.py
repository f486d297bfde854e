"""mia/metrics.py: against plain references on random cases, and on hand-made edge cases; the
summary over targets (mia/evaluate.py)."""
from __future__ import annotations

import numpy as np
import pytest

from mia.attacks import AttackSettings
from mia.evaluate import summarize
from mia.metrics import best_threshold, compute_metrics, group_thresholds
from utils.errors import UsageError


def _roc(scores, members):
    """Plain reference: (FPR, TPR) of `score >= t` at every distinct t and at +inf."""
    pts = [((scores[~members] >= t).mean(), (scores[members] >= t).mean()) for t in np.unique(np.r_[scores, np.inf])]
    return np.array(pts).T


def _tpr_at(scores, members, level):
    """Plain reference: largest TPR whose FPR <= level."""
    fpr, tpr = _roc(scores, members)
    return tpr[fpr <= level].max()


def _auc(scores, members):
    """Plain reference: P(member scores above non-member), ties count 1/2 (Mann-Whitney)."""
    d = scores[members][:, None] - scores[~members][None, :]
    return (d > 0).mean() + 0.5 * (d == 0).mean()


@pytest.mark.parametrize("seed", range(5))
def test_matches_plain_references_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(300, 3000))
    members = rng.random(n) < rng.uniform(0.2, 0.8)
    scores = rng.normal(0, 1, n) + 0.8 * members
    if seed % 2:  # heavy ties
        scores = np.round(scores, 1)
    m = compute_metrics(scores, members)
    fpr, tpr = _roc(scores, members)  # compute_metrics uses sklearn itself: compare with plain references
    assert m["auc"] == pytest.approx(_auc(scores, members), abs=1e-12)
    assert m["advantage"] == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    for key, level in (("tpr_at_1pct_fpr", 1e-2), ("tpr_at_0.1pct_fpr", 1e-3)):
        assert m[key] == pytest.approx(_tpr_at(scores, members, level), abs=1e-12)
    assert "tpr_at_0.01pct_fpr" not in m  # fewer than 10,000 non-members
    assert m["min_fpr"] == pytest.approx(1 / (~members).sum())


def test_perfect_separation():
    members = np.r_[np.ones(50, bool), np.zeros(200, bool)]
    m = compute_metrics(np.r_[np.linspace(2, 3, 50), np.linspace(0, 1, 200)], members, threshold=1.5)
    assert m["auc"] == 1.0 and m["advantage"] == 1.0 and m["accuracy"] == 1.0
    assert m["tpr_at_1pct_fpr"] == 1.0 and m["tpr_at_0.1pct_fpr"] == 1.0


def test_all_equal_scores_are_chance_and_catch_nothing_at_low_fpr():
    members = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    m = compute_metrics(np.zeros(200), members, threshold=0.0)
    assert m["auc"] == 0.5 and m["advantage"] == 0.0
    assert m["tpr_at_1pct_fpr"] == 0.0 and m["tpr_at_0.1pct_fpr"] == 0.0
    assert m["accuracy"] == 0.5  # everyone predicted a member


def test_tpr_at_fpr_counts_the_level_itself_and_never_splits_ties():
    # 4 members, 100 non-members; one non-member (0.85) outranks three members, another (0.6) two.
    members = np.r_[np.ones(4, bool), np.zeros(100, bool)]
    scores = np.r_[[0.9, 0.8, 0.4, 0.3], 0.85, 0.6, np.linspace(0.0, 0.2, 98)]
    m = compute_metrics(scores, members)
    assert m["tpr_at_1pct_fpr"] == 0.5    # threshold 0.8: TPR 2/4 at FPR exactly 1/100
    assert m["tpr_at_0.1pct_fpr"] == 0.25  # FPR must be 0: only 0.9 is above every non-member
    assert m["tpr_at_0.1pct_fpr_below_floor"] and not m["tpr_at_1pct_fpr_below_floor"]
    # a member tied with a non-member at the top: the tie cannot be split
    tied = np.r_[[1.0, 1.0], 1.0, np.zeros(99)]
    m = compute_metrics(tied, np.r_[np.ones(2, bool), np.zeros(100, bool)])
    assert m["tpr_at_1pct_fpr"] == 1.0 and m["tpr_at_0.1pct_fpr"] == 0.0


def test_lowest_level_reported_only_with_10000_non_members_and_roc_is_consistent():
    rng = np.random.default_rng(0)
    members = np.r_[np.ones(10_000, bool), np.zeros(10_000, bool)]
    scores = rng.normal(0, 1, 20_000) + members
    m = compute_metrics(scores, members)
    assert m["tpr_at_0.01pct_fpr"] == pytest.approx(_tpr_at(scores, members, 1e-4))
    assert not m["tpr_at_0.01pct_fpr_below_floor"]
    fpr, tpr = np.array(m["roc"]["fpr"]), np.array(m["roc"]["tpr"])
    assert 200 <= len(fpr) <= 400 and np.all(np.diff(fpr) > 0) and np.all(np.diff(tpr) >= 0)
    assert fpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    for key, level in (("tpr_at_1pct_fpr", 1e-2), ("tpr_at_0.1pct_fpr", 1e-3), ("tpr_at_0.01pct_fpr", 1e-4)):
        np.testing.assert_array_equal(tpr[fpr == level], [m[key]])  # the levels are grid points, same definition


def test_balanced_accuracy_at_a_threshold():
    members = np.r_[np.ones(4, bool), np.zeros(6, bool)]
    scores = np.r_[[5, 4, 1, -9], [3, 0, 0, 0, 0, -9]]
    m = compute_metrics(scores, members, threshold=2.0)
    assert m["accuracy"] == pytest.approx(0.5 * (2 / 4 + 5 / 6))
    assert m["threshold"] == 2.0
    assert "accuracy" not in compute_metrics(scores, members)
    with pytest.raises(ValueError):
        compute_metrics(np.zeros(3), np.ones(3, bool))


def test_best_threshold_maximises_balanced_accuracy_and_is_finite():
    members = np.r_[np.ones(3, bool), np.zeros(3, bool)]
    # cuts at 2 (TPR 2/3, FPR 0) and 0.5 (TPR 1, FPR 1/3) tie exactly: the larger threshold wins
    assert best_threshold(np.array([3, 2, 0.5, 1, 0, 0]), members) == 2.0
    assert best_threshold(np.array([3, 2, 0.5, 0.1, 0, 0]), members) == 0.5
    t = best_threshold(np.array([0, 0, 0, 1, 1, 1.0]), members)  # anti-correlated: predict nobody
    assert np.isfinite(t) and t > 1
    assert best_threshold(np.ones(6), members) > 1  # all equal: no cut beats chance
    thr = group_thresholds(np.array([3, 0, 10, 5]), np.array([1, 0, 1, 0], bool), np.array([0, 0, 1, 1]), 3)
    np.testing.assert_array_equal(thr, [3, 10, 0])


def _per_target(aucs, accuracies):
    """attack_target-like results, one per target (only what summarize reads)."""
    return {t: {"auc": a, **({"accuracy": c} if c is not None else {}), "roc": {"fpr": [0, 1], "tpr": [0, 1]},
                "info": {}, "calibration": "", "time_s": 1.0, "min_fpr": 0.01}
            for t, (a, c) in enumerate(zip(aucs, accuracies))}


def test_summary_std_over_targets_is_the_sample_std():
    s = summarize("loss", _per_target([0.6, 0.7, 0.8], [0.55, None, None]), AttackSettings())
    assert s["mean"]["auc"] == pytest.approx(0.7)
    assert s["std"]["auc"] == pytest.approx(0.1)  # ddof = 1; the population std would be 0.0816
    assert s["mean"]["accuracy"] == 0.55 and s["std"]["accuracy"] is None  # one value: undefined, not 0
    one = summarize("loss", _per_target([0.6], [0.55]), AttackSettings())
    assert one["std"] == {"auc": None, "accuracy": None, "time_s": None, "min_fpr": None}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_and_labels_are_refused_with_one_line(bad):
    """No metric from a NaN or an infinity (a NaN once mapped to the lowest score read as AUC 0.5: no leak)."""
    members = np.r_[np.ones(4, bool), np.zeros(6, bool)]
    scores = np.r_[[5, 4, 1, 2], [3, 0, 0, 0, 0, 1]].astype(float)
    scores[[0, 7]] = bad
    with pytest.raises(UsageError, match=r"^2 of 10 attack scores are not finite \(NaN or inf\)"):
        compute_metrics(scores, members)
    with pytest.raises(UsageError, match="0/1"):
        compute_metrics(np.arange(4.0), np.array([1.0, np.nan, 0.0, 0.0]))
    assert compute_metrics(np.arange(4.0), np.array([1, 1, 0, 0]))["auc"] == 0.0  # 0/1 integers are labels


def test_the_fpr_floor_is_one_rule_for_the_metrics_and_the_comparisons():
    """below_fpr_floor: a level strictly under 1/#non-members; compute_metrics' flags and the comparison's
    floor_flags both read it (a level exactly at the floor is measured)."""
    from analysis.compare import floor_flags
    from mia.metrics import FPR_LEVELS, below_fpr_floor

    assert bool(below_fpr_floor(0.001, 999)) and not bool(below_fpr_floor(0.001, 1000))
    assert below_fpr_floor(0.01, np.array([50, 100, 200])).tolist() == [True, False, False]
    rng = np.random.default_rng(0)
    for n_out in (150, 1000, 1500):
        member = np.r_[np.ones(200, bool), np.zeros(n_out, bool)]
        m = compute_metrics(rng.normal(size=len(member)), member)
        for key, level in FPR_LEVELS.items():
            if key in m:
                assert m[f"{key}_below_floor"] == (level < 1 / n_out) == floor_flags(key, [member])["below_floor"]
