"""analysis/per_example.py: memorisation, exposure and its change, PIEs, on synthetic studies with known answers
(no training)."""
from __future__ import annotations

import numpy as np
import pytest

from analysis import per_example as pe
from training.membership import keep_matrix


def test_memorisation_error_within_its_standard_error_at_the_stated_rate():
    """Known IN / OUT correctness probabilities: |mem - truth| <= 1.96 se for ~95% of examples (the plug-in se
    with 16 IN and 16 OUT models: between 90% and 98%), and the estimate is unbiased."""
    rng = np.random.default_rng(100)  # not the keep matrix's seed: the same stream would correlate them
    m, n = 32, 4000
    keep = keep_matrix(m, n, 0)
    p_in = rng.uniform(0.3, 0.95, n)
    p_out = p_in * rng.uniform(0.2, 1.0, n)
    correct = rng.random((m, n)) < np.where(keep, p_in, p_out)
    est = pe.memorisation(correct, keep)
    assert (est.n_in == 16).all() and (est.n_out == 16).all()
    ok = np.isfinite(est.se) & (est.se > 0)
    cover = np.mean(np.abs(est.mem - (p_in - p_out))[ok] <= 1.96 * est.se[ok])
    assert 0.90 <= cover <= 0.98, cover
    assert abs(np.mean(est.mem - (p_in - p_out))) < 3 * np.sqrt(np.mean(est.se ** 2) / n)
    # the se is the spread of the error, not an arbitrary scale
    assert np.std(est.mem - (p_in - p_out)) == pytest.approx(np.sqrt(np.mean(est.se[ok] ** 2)), rel=0.1)


def test_always_correct_example_has_memorisation_zero():
    keep = keep_matrix(9, 50, 0)
    correct = np.random.default_rng(1).random((9, 50)) < 0.5
    correct[:, 7] = True
    correct[:, 8] = keep[:, 8]  # correct exactly when trained on: mem 1
    est = pe.memorisation(correct, keep)
    assert est.mem[7] == 0 and est.se[7] == 0
    assert est.mem[8] == 1 and est.se[8] == 0


def _phis(m, n, seed, planted=None, delta=0.0, gap=1.0):
    """phi_b = example difficulty + per-model shared noise + gap IN; phi_a = phi_b + its own noise, and delta
    more when IN for the planted examples. Model i of A and B share the subset and the noise of the draw."""
    rng = np.random.default_rng(seed + 100)  # not the keep matrix's stream
    keep = keep_matrix(m, n, seed)
    base = rng.normal(0, 2, n) + rng.normal(0, 1, (m, n))
    phi_b = base + gap * keep + rng.normal(0, 0.5, (m, n))
    phi_a = base + gap * keep + rng.normal(0, 0.5, (m, n))
    if planted is not None:
        phi_a = phi_a + delta * (keep & planted)
    return keep, phi_a, phi_b


def test_exposure_is_the_standardised_gap():
    keep = keep_matrix(8, 3, 0)
    phis = np.where(keep, 2.0, 0.0) + np.array([[0.1], [-0.1], [0.2], [-0.2], [0.1], [-0.1], [0.2], [-0.2]])
    e = pe.exposure(phis, keep)
    for j in range(3):
        a, b = phis[keep[:, j], j], phis[~keep[:, j], j]
        sd = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
        assert e.exposure[j] == pytest.approx((a.mean() - b.mean()) / sd)


def test_null_study_keeps_significant_share_below_fdr():
    """Permuted membership (phi does not depend on it): raw p-values uniform, share significant <= FDR."""
    m, n = 16, 4000
    keep, phi_a, phi_b = _phis(m, n, 0, gap=1.0)
    permuted = np.random.default_rng(5).permuted(keep, axis=1)  # each model's membership shuffled over the pool
    ch = pe.exposure_change(phi_a, phi_b, permuted, fdr=0.05)
    assert 0.035 <= np.mean(ch.p < 0.05) <= 0.065  # the per-example test is calibrated
    assert np.mean(ch.rose | ch.fell) <= 0.05
    # and on the real membership, A and B expose alike: nothing beyond the FDR either
    ch = pe.exposure_change(phi_a, phi_b, keep, fdr=0.05)
    assert np.mean(ch.rose | ch.fell) <= 0.05


def test_planted_exposed_set_is_recovered():
    """10% of examples get +3 (6 sd of the per-model difference) on their IN phi in A: recovered with
    precision >= 0.9 (FDR 5%) and recall >= 0.8; none called fallen."""
    m, n = 16, 2000
    planted = np.zeros(n, bool)
    planted[np.random.default_rng(3).choice(n, n // 10, replace=False)] = True
    keep, phi_a, phi_b = _phis(m, n, 1, planted, delta=3.0)
    ch = pe.exposure_change(phi_a, phi_b, keep, fdr=0.05)
    precision = (ch.rose & planted).sum() / max(1, ch.rose.sum())
    recall = (ch.rose & planted).sum() / planted.sum()
    assert precision >= 0.9 and recall >= 0.8, (precision, recall)
    assert ch.fell.sum() <= 0.05 * ch.rose.sum()
    assert np.mean(ch.change[planted]) > 1.0 > abs(np.mean(ch.change[~planted]))


def test_pies_equal_the_definition_on_two_hand_built_populations():
    dense = np.array([[0, 1, 2, 3, 1],
                      [0, 1, 2, 0, 2],
                      [1, 1, 2, 3, 0]])        # modes: 0, 1, 2, 3, tie (0,1,2) -> 0
    pruned = np.array([[0, 2, 2, 0, 0],
                       [0, 2, 1, 0, 1],
                       [1, 1, 1, 3, 2],
                       [0, 2, 2, 3, 1]])      # modes: 0, 2, tie (1,2) -> 1, tie (0,3) -> 0, 1
    assert pe.modal_prediction(dense, 4).tolist() == [0, 1, 2, 3, 0]
    assert pe.modal_prediction(pruned, 4).tolist() == [0, 2, 1, 0, 1]
    assert pe.pies(pruned, dense, 4).tolist() == [False, True, True, True, True]
    assert not pe.pies(dense, dense, 4).any()


def test_rank_correlation_and_group_difference_intervals():
    rng = np.random.default_rng(0)
    x = rng.normal(size=500)
    r = pe.rank_correlation(x, x + rng.normal(size=500), n_boot=300)
    assert r["ci_low"] < r["rho"] < r["ci_high"] and 0.5 < r["rho"] < 0.8
    assert pe.rank_correlation(x, rng.normal(size=500), n_boot=300)["ci_low"] < 0
    g = np.arange(500) < 100
    d = pe.group_difference(np.where(g, 1.0, 0.0) + rng.normal(0, 0.5, 500), g, n_boot=300)
    assert d["ci_low"] < 1.0 < d["ci_high"] and d["n_group"] == 100
    assert d["ci_low"] > 0.8


def test_cross_fitted_correlation_removes_the_noise_memorisation_and_the_change_share():
    """No pruning at all (A is a second, independent draw of dense's models): the true rank correlation of
    memorisation with the change is 0. The plain estimator, memorisation and the dense exposure from the same
    models, is pulled below 0 by their shared noise; the cross-fitted one (disjoint halves) covers 0."""
    rng = np.random.default_rng(7)
    m, n = 16, 3000
    keep = keep_matrix(m, n, 3)
    p_in, p_out = rng.uniform(0.5, 1.0, n), rng.uniform(0.0, 0.5, n)

    def draw():
        correct = rng.random((m, n)) < np.where(keep, p_in, p_out)
        return correct, correct + rng.normal(0, 0.5, (m, n))  # phi tracks correctness, as a model's confidence does

    c_dense, phi_dense = draw()
    _, phi_a = draw()
    exp_a = pe.exposure(phi_a, keep).exposure
    plain = pe.rank_correlation(pe.memorisation(c_dense, keep).mem, exp_a - pe.exposure(phi_dense, keep).exposure,
                                n_boot=300)
    assert plain["ci_high"] < -0.1  # the bias this estimator exists to remove
    h = (np.arange(m) % 2 == 0, np.arange(m) % 2 == 1)
    mem = tuple(pe.memorisation(c_dense[s], keep[s]).mem for s in h)
    change = tuple(exp_a - pe.exposure(phi_dense[s], keep[s]).exposure for s in h)
    cross = pe.cross_fit_correlation(mem, change, n_boot=300)
    assert cross["ci_low"] < 0 < cross["ci_high"] and abs(cross["rho"]) < 0.05, cross
    # a real effect survives: exposure in A rises with memorisation
    change = tuple(c + 2 * (p_in - p_out) for c in change)
    assert pe.cross_fit_correlation(mem, change, n_boot=300)["ci_low"] > 0.1
