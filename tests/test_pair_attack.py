"""analysis/pair_attack.py: the attacker who sees both models, on synthetic Gaussian phi where the answer is known."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from analysis.pair_attack import PAIR_ATTACKS, PairInput
from mia.attacks import run_attack
from mia.shadows import AttackInput, AttackSettings
from training.membership import keep_matrix
from utils.errors import UsageError

N, SHADOWS = 4000, 32


def gaussian_study(g_a: float, g_b: float, seed: int = 0, shadows: int = SHADOWS):
    """phi_A = mu_A + g_A IN + N(0, 1), phi_B likewise, independent; logits [phi, 0] with label 0 make
    mia.attacks.phi exactly phi. Model 0 is the target, 1..SHADOWS its shadows."""
    rng = np.random.default_rng(seed + 100)  # not the keep matrix's stream
    keep = keep_matrix(shadows + 1, N, seed)
    labels = np.zeros(N, np.int64)

    def logits(g):
        p = rng.normal(0, 1, N) + g * keep + rng.normal(0, 1, keep.shape)
        return np.stack([p, np.zeros_like(p)], -1)[:, :, None, :]  # [M, N, 1, 2]

    la, lb = logits(g_a), logits(g_b)
    inp = [AttackInput(lg[0], lg[1:], keep[1:], labels) for lg in (la, lb)]
    return PairInput(*inp), keep[0]


def auc(name, inp, members, st=AttackSettings()):
    out = PAIR_ATTACKS[name].fn(inp, st) if name.startswith("pair_") else run_attack(name, inp, st)
    return roc_auc_score(members, out.scores)


def expected_auc(*gaps, k=SHADOWS // 2):
    """The ideal test's AUC Phi(|g| / sqrt 2) with the per-example centres estimated from k shadows each
    (their error adds 1/k to the unit variance)."""
    return norm.cdf(np.sqrt(sum(g * g for g in gaps)) / np.sqrt(2 * (1 + 1 / k)))


@pytest.mark.parametrize("name", list(PAIR_ATTACKS))
def test_null_case_permuted_membership(name):
    inp, members = gaussian_study(1.0, 1.0)
    permuted = np.random.default_rng(7).permutation(members)
    assert auc(name, inp, permuted) == pytest.approx(0.5, abs=0.03)


def test_online_pair_beats_each_model_alone_by_the_expected_amount():
    inp, members = gaussian_study(1.0, 1.0)
    single = [auc("lira", x, members) for x in (inp.a, inp.b)]
    pair = auc("pair_lira", inp, members)
    assert single == pytest.approx([expected_auc(1.0)] * 2, abs=0.025)
    assert pair == pytest.approx(expected_auc(1.0, 1.0), abs=0.025)
    assert pair - max(single) == pytest.approx(expected_auc(1.0, 1.0) - expected_auc(1.0), abs=0.03)
    assert pair - max(single) > 0.04


def test_offline_pair_beats_each_model_alone():
    inp, members = gaussian_study(1.0, 1.0)
    single = max(auc("lira_offline", x, members) for x in (inp.a, inp.b))
    assert auc("pair_lira_offline", inp, members) - single > 0.04


@pytest.mark.parametrize("name", list(PAIR_ATTACKS))
def test_one_model_pure_noise_equals_the_other_alone(name):
    """B carries no membership: the pair attack is model A's attack, within noise (AUC within 0.015). The
    online test pays for estimating B's useless per-example IN and OUT centres: their difference, of variance
    2/k, scales B's noise into the score (effect size / sqrt(1 + 2/k): 0.03 AUC at k = 16, 0.006 at k = 64),
    so this is checked with 128 shadows, one pooled covariance (per-example 2x2 covariances from 64 shadows
    add their own noise: 0.02 AUC here)."""
    inp, members = gaussian_study(1.0, 0.0, shadows=128)
    st = AttackSettings(lira_fixed_variance_below=1000)
    single = auc(PAIR_ATTACKS[name].single, inp.a, members, st)
    assert auc(name, inp, members, st) == pytest.approx(single, abs=0.015)


def test_pair_of_different_subsets_is_refused():
    inp, _ = gaussian_study(1.0, 1.0)
    other, _ = gaussian_study(1.0, 1.0, seed=1)
    with pytest.raises(UsageError, match="same shadows"):
        PairInput(inp.a, other.b)
