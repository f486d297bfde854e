"""analysis/bootstrap.py: metrics against sklearn and compute_metrics, the bootstrap against explicit
resampling, known answers (identical configurations, a shift with a closed-form AUC difference,
coverage under the null, the paired t interval), multi-target and per-class behaviour. ~5 s on a loaded
2-core CPU. Coverage of the crossed interval, multiplicity and per-class tests: tests/test_intervals.py."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from scipy.stats import ttest_rel

from analysis.bootstrap import (METRICS, Replicates, accuracy_difference, auc_spread, benjamini_hochberg, bootstrap_attacks,
                           compare_attacks, difference, holm, paired_bootstrap, per_class_auc, resample_weights,
                           weighted_metrics)
from mia.metrics import FPR_LEVELS, compute_metrics
from utils.errors import UsageError

ALL = ("auc", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")


def _case(rng, n, ties=False, shift=0.8):
    """Random scores with a membership signal; ties=True rounds them coarsely (many tied scores)."""
    members = rng.random(n) < rng.uniform(0.3, 0.7)
    scores = rng.normal(0, 1, n) + shift * members
    return (np.round(scores, 1) if ties else scores), members


# -- 4. metrics equal the project's definitions -----------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_metrics_match_sklearn_and_compute_metrics(seed):
    rng = np.random.default_rng(seed)
    n_out = [1000, 2000, 3001, 5000, 1500, 12_000][seed]  # 1000, 2000: ROC points exactly on 1% and 0.1% FPR
    n_in = int(rng.integers(n_out // 3, 2 * n_out))
    members = np.r_[np.ones(n_in, bool), np.zeros(n_out, bool)][rng.permutation(n_in + n_out)]
    scores = rng.normal(0, 1, len(members)) + 0.7 * members
    if seed % 2:
        scores = np.round(scores, 1)  # heavy ties
    if seed == 4:  # extreme but finite scores keep their order
        scores[:5] = [-1e308, 1e308, -1e308, 1e308, -1e308]
    ref = compute_metrics(scores, members)
    got = weighted_metrics(scores, members, metrics=ALL)
    assert got["auc"] == pytest.approx(roc_auc_score(members, scores), abs=1e-12)
    assert got["auc"] == pytest.approx(ref["auc"], abs=1e-12)
    for k in ("advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
        assert got[k] == ref[k], k  # exact: same counts, same float divisions


def test_non_finite_scores_are_refused_as_by_compute_metrics():
    """One rule for both (mia/metrics.check_inputs): a NaN or an infinity is refused, never mapped and scored."""
    members = np.r_[np.ones(3, bool), np.zeros(3, bool)]
    for bad in (np.nan, np.inf, -np.inf):
        scores = np.array([3.0, 2.0, bad, 1.0, 0.0, -1.0])
        for f in (compute_metrics, lambda s, m: weighted_metrics(s, m, metrics=ALL)):
            with pytest.raises(UsageError, match="1 of 6 attack scores are not finite"):
                f(scores, members)


def test_tpr_by_hand():
    """10 non-members: 1% FPR admits no false positive, so TPR = members above the best non-member (1 of 5)."""
    members = np.r_[np.ones(5, bool), np.zeros(10, bool)]
    scores = np.r_[[9, 7, 5, 3, 1], [8, 6, 4, 2, 0, -1, -2, -3, -4, -5]].astype(float)
    got = weighted_metrics(scores, members, metrics=ALL)
    assert got["tpr_at_1pct_fpr"] == 0.2  # only 9 is above every non-member
    assert compute_metrics(scores, members)["tpr_at_1pct_fpr"] == 0.2


def test_fpr_budget_where_the_product_rounds_down(monkeypatch):
    """0.7 * 90 = 62.999... in float64 while 63 / 90 <= 0.7: sklearn's point at FPR 63/90 counts. An
    extra level (added to mia.metrics for this test only) is compared with compute_metrics on it."""
    monkeypatch.setitem(FPR_LEVELS, "tpr_at_70pct_fpr", 0.7)
    # descending: 20 members, 63 non-members, 20 members, 27 non-members; TPR 1.0 at FP 63, 0.5 at FP 62
    members = np.r_[np.ones(20, bool), np.zeros(63, bool), np.ones(20, bool), np.zeros(27, bool)]
    scores = -np.arange(len(members), dtype=float)
    ref = compute_metrics(scores, members)["tpr_at_70pct_fpr"]
    assert weighted_metrics(scores, members, metrics=("tpr_at_70pct_fpr",))["tpr_at_70pct_fpr"] == ref == 1.0


@pytest.mark.parametrize("top", [[1.0, 1.0, 0.0], [5.0] * 3])
def test_ties_at_the_top(top):
    """A member tied with a non-member at the highest score: no ROC point but (0, 0) has FPR <= 1%, so
    TPR@1% is 0 (not the tied group's TPR); all scores tied: AUC 0.5."""
    members = np.r_[True, False, True, np.zeros(40, bool)]
    scores = np.r_[top, np.zeros(40)]
    got, ref = weighted_metrics(scores, members, metrics=ALL), compute_metrics(scores, members)
    assert got["tpr_at_1pct_fpr"] == ref["tpr_at_1pct_fpr"] == 0.0
    for k in ALL:
        assert got[k] == pytest.approx(ref[k], abs=1e-12), k


def test_resample_metrics_equal_explicit_resampling():
    """Every bootstrap replicate equals compute_metrics(A on the resampled examples) - (B on them)."""
    rng = np.random.default_rng(1)
    a, members = _case(rng, 400, ties=True)
    b = np.round(a + rng.normal(0, 0.5, len(a)), 1)
    res = paired_bootstrap(a, b, members, metrics=ALL, n_boot=7, seed=3, chunk_elems=1000)
    w = np.concatenate(list(resample_weights(len(a), 7, seed=3)))
    assert np.array_equal(w.sum(1), np.full(7, len(a)))
    assert len({w[r, members].sum() for r in range(7)}) > 1  # not stratified: each resample has its own counts
    for r in range(7):
        idx = np.repeat(np.arange(len(a)), w[r])
        ra, rb = compute_metrics(a[idx], members[idx]), compute_metrics(b[idx], members[idx])
        for k in ALL:
            assert res[k]["replicates"][r] == pytest.approx(ra[k] - rb[k], abs=1e-12), (k, r)


def test_every_target_gets_the_same_example_resamples():
    """Crossed: resample b of target t is resample b of the pool, whatever the target's membership;
    with the same scores and membership for two targets, their replicates are identical, and with
    another membership they are computed from the very same weights (checked by explicit resampling)."""
    rng = np.random.default_rng(8)
    a, m0 = _case(rng, 300)
    m1 = rng.random(300) < 0.5
    r = bootstrap_attacks({"x": [a, a, a]}, [m0, m0, m1], metrics=("auc",), n_boot=5, seed=4)["x"]["auc"]
    assert np.array_equal(r.per_target[0], r.per_target[1])
    w = next(resample_weights(300, 5, seed=4))
    for b in range(5):
        idx = np.repeat(np.arange(300), w[b])
        assert r.per_target[2, b] == pytest.approx(roc_auc_score(m1[idx], a[idx]), abs=1e-12)


def test_deterministic_and_independent_of_chunk_size():
    rng = np.random.default_rng(2)
    a, members = _case(rng, 500)
    b = a + rng.normal(0, 1, len(a))
    one = paired_bootstrap(a, b, members, n_boot=50, seed=5, chunk_elems=500 * 7)
    two = paired_bootstrap(a, b, members, n_boot=50, seed=5, chunk_elems=10**7)
    other = paired_bootstrap(a, b, members, n_boot=50, seed=6)
    for k in METRICS:
        assert np.array_equal(one[k]["replicates"], two[k]["replicates"])
    assert not np.array_equal(one["auc"]["replicates"], other["auc"]["replicates"])


# -- 1. identical configurations ---------------------------------------------------------------------------

def test_identical_configurations_give_exactly_zero():
    rng = np.random.default_rng(3)
    scores = [_case(rng, 600, ties=t) for t in (False, True)]
    a = [s for s, _ in scores]
    res = paired_bootstrap(a, [x.copy() for x in a], [m for _, m in scores], metrics=ALL, n_boot=100)
    for k, r in res.items():
        assert (r["difference"], r["ci_low"], r["ci_high"], r["excludes_zero"]) == (0.0, 0.0, 0.0, False), k


# -- 2. a shift of known size ----------------------------------------------------------------------------

def test_known_auc_shift_is_covered_and_significant():
    """Members N(1, 1) vs N(0.5, 1), non-members N(0, 1): AUC_A - AUC_B = Phi(1/sqrt2) - Phi(0.5/sqrt2).
    Paired: B's member scores are A's shifted by -0.5, non-members shared."""
    rng = np.random.default_rng(4)
    n = 4000
    members = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    a = rng.normal(0, 1, n) + members
    b = a - 0.5 * members
    truth = norm.cdf(1 / np.sqrt(2)) - norm.cdf(0.5 / np.sqrt(2))
    r = paired_bootstrap(a, b, members, n_boot=400, seed=0)["auc"]
    assert r["ci_low"] < truth < r["ci_high"]
    assert r["excludes_zero"] and r["ci_low"] > 0.05
    assert abs(r["difference"] - truth) < 0.02
    assert r["a"] - r["b"] == pytest.approx(r["difference"])


# -- 3. coverage under the null ----------------------------------------------------------------------------

def test_null_intervals_cover_zero_about_95_percent():
    """200 simulated studies where A and B are draws of one distribution on the same examples (a shared
    per-example component plus independent noise): the 95% intervals cover 0 in 90-99% of them."""
    rng = np.random.default_rng(5)
    n, covered = 300, 0
    members = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    for sim in range(200):
        shared = rng.normal(0, 1, n) + 0.8 * members
        a, b = shared + rng.normal(0, 0.7, n), shared + rng.normal(0, 0.7, n)
        r = paired_bootstrap(a, b, members, metrics=("auc",), n_boot=200, seed=sim)["auc"]
        covered += r["ci_low"] <= 0 <= r["ci_high"]
    assert 0.90 <= covered / 200 <= 0.99, covered


# -- 6. several targets ------------------------------------------------------------------------------------

def test_multi_target_point_is_mean_of_per_target_differences():
    rng = np.random.default_rng(6)
    cases = [_case(rng, 700, ties=bool(t % 2)) for t in range(3)]  # one pool: every target scores the same examples
    a = [s for s, _ in cases]
    b = [s + rng.normal(0, 0.8, len(s)) for s in a]
    mem = [m for _, m in cases]
    res = compare_attacks({"x": a, "y": b}, {"x": b, "y": a}, mem, metrics=ALL, n_boot=60)
    for k in ALL:
        per = [compute_metrics(a[t], mem[t])[k] - compute_metrics(b[t], mem[t])[k] for t in range(3)]
        assert res["x"][k]["difference"] == pytest.approx(np.mean(per), abs=1e-12)
        assert res["y"][k]["difference"] == pytest.approx(-np.mean(per), abs=1e-12)
        assert res["x"][k]["num_targets"] == 3
        # swapping A and B mirrors every replicate (same resamples and target draws for every attack)
        assert np.allclose(res["x"][k]["replicates"], -res["y"][k]["replicates"], atol=1e-12)


def test_targets_without_example_variation_give_the_paired_t_interval():
    """Three targets whose difference does not vary with the examples (AUC 1 vs 0, equal, 1 vs 0.5):
    the shared (example) part is 0, so the interval is the paired t interval over the three per-target
    differences (scipy's ttest_rel), not [min, max] of them as the percentile over targets gave."""
    members = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    perfect, const = members.astype(float), np.zeros(100)
    a, b = [perfect, perfect, perfect], [1 - perfect, perfect, const]
    r = paired_bootstrap(a, b, [members] * 3, metrics=("auc",), n_boot=300)["auc"]
    ref = ttest_rel([1.0, 1.0, 1.0], [0.0, 1.0, 0.5])
    assert r["difference"] == pytest.approx(0.5)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)), abs=1e-12)
    assert r["p_value"] == pytest.approx(ref.pvalue, abs=1e-12) and r["df"] == 2
    assert r["ci_low"] < 0 < 1 < r["ci_high"] and r["covers"] == "examples and training seeds"


def test_shared_example_variation_is_counted_once():
    """Known answer of the variance: per-target replicates d[t, b] = s[b] + e[t, b] (s shared by every
    target, e each target's own) and points p[t]: var = mean cov(d_t, d_u) over t != u + var(p) / T."""
    rng = np.random.default_rng(10)
    s, e = rng.normal(0, 1, 4000), rng.normal(0, 2, (4, 4000))
    point = np.array([0.1, -0.2, 0.4, 0.3])
    r = difference(Replicates(point, s + e), Replicates(np.zeros(4), np.zeros((4, 4000))))
    cov = np.cov(s + e)
    shared = (cov.sum() - np.trace(cov)) / 12
    assert shared == pytest.approx(np.var(s, ddof=1), rel=0.05)  # the own parts do not covary
    assert r["se"] ** 2 == pytest.approx(shared + np.var(point, ddof=1) / 4, rel=1e-12)
    one = difference(Replicates(point[:1], (s + e)[:1]), Replicates(np.zeros(1), np.zeros((1, 4000))))
    assert one["se"] ** 2 == pytest.approx(np.var((s + e)[0], ddof=1), rel=1e-12) and one["covers"] == "examples"


def test_accuracy_difference_is_the_paired_t_interval():
    one = accuracy_difference([0.9], [0.85])
    assert one["difference"] == pytest.approx(0.05) and one["ci_low"] is None and one["excludes_zero"] is None
    same = accuracy_difference([0.9, 0.8, 0.7], [0.89, 0.79, 0.69])
    assert (same["ci_low"], same["ci_high"]) == pytest.approx((0.01, 0.01))  # constant difference
    assert same["excludes_zero"] and same["p_value"] == 0.0
    a, b = [0.81, 0.84, 0.80], [0.80, 0.80, 0.81]  # the same sign twice would have been [min, max] > 0 ... not here
    got, ref = accuracy_difference(a, b), ttest_rel(a, b)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(tuple(ref.confidence_interval(0.95)), abs=1e-12)
    assert got["p_value"] == pytest.approx(ref.pvalue, abs=1e-12)
    share = accuracy_difference([0.82, 0.84, 0.83], [0.80, 0.80, 0.82])  # all three positive: [min, max] excluded 0
    assert share["ci_low"] < 0 and not share["excludes_zero"]


def test_multiplicity_adjustments_known_answers():
    """Holm and Benjamini-Hochberg by hand; NaN entries are outside the family."""
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    assert np.allclose(holm(p), [0.03, 0.06, 0.06, np.nan, 0.02], equal_nan=True)
    assert np.allclose(benjamini_hochberg(p), [0.02, 0.04, 0.04, np.nan, 0.02], equal_nan=True)
    assert list(holm([0.9, 0.01])) == [0.9, 0.02] and holm([0.6, 0.6]).max() == 1.0  # monotone, capped at 1


def test_bad_input_is_refused():
    m = np.r_[True, False, True]
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap(np.ones(3), np.ones(3), m, metrics=("aucc",))
    with pytest.raises(ValueError, match="both members and non-members"):
        paired_bootstrap(np.ones(3), np.ones(3), np.ones(3, bool))
    with pytest.raises(ValueError, match="non-members"):
        paired_bootstrap(np.ones(3), np.ones(3), m, metrics=("tpr_at_0.01pct_fpr",))
    with pytest.raises(ValueError, match="targets"):
        paired_bootstrap([np.ones(3)], [np.ones(3), np.ones(3)], [m])
    with pytest.raises(ValueError, match="one pool"):
        paired_bootstrap([np.ones(3), np.ones(4)], [np.ones(3), np.ones(4)], [m, np.r_[m, False]])


# -- 5. per-class AUC ---------------------------------------------------------------------------------------

def test_per_class_auc_matches_sklearn():
    rng = np.random.default_rng(7)
    n = 900
    labels = rng.integers(0, 3, n)  # classes 0-2 mixed; 3: only members; 4: absent
    members = rng.random(n) < 0.5
    scores = np.round(rng.normal(0, 1, n) + members * (labels + 1) * 0.4, 1)
    labels = np.r_[labels, [3, 3]]
    members, scores = np.r_[members, [True, True]], np.r_[scores, [1.0, 2.0]]
    got = per_class_auc(scores, members, labels, 5)
    for c in range(3):
        rows = labels == c
        assert got[c] == pytest.approx(roc_auc_score(members[rows], scores[rows]), abs=1e-12)
    assert np.isnan(got[3]) and np.isnan(got[4])
    assert got[2] > got[0]  # the built-in gradient
    s = auc_spread(got)
    assert s["num_classes"] == 3 and s["min"] == got[:3].min() and s["max"] == got[:3].max()
    assert s["range"] == pytest.approx(got[:3].max() - got[:3].min()) and s["std"] == pytest.approx(np.std(got[:3]))
