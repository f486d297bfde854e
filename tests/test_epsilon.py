"""The empirical epsilon lower bound (mia/epsilon.py): a valid bound on a mechanism whose epsilon is known,
0 where the attack sees nothing, and the Clopper-Pearson ends it rests on against closed forms."""
import math

import numpy as np
import pytest

from mia.epsilon import clopper_pearson, default_delta, epsilon_lower_bound
from mia.metrics import compute_metrics


def test_clopper_pearson_closed_forms():
    # k = 0 and k = n: the one-sided ends have closed forms, (a/2)^(1/n) with a = 5%
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-12))
    assert clopper_pearson(10, 10) == (pytest.approx(0.025 ** (1 / 10), abs=1e-12), 1.0)
    lo, hi = clopper_pearson(50, 100)  # R: binom.test(50, 100)$conf.int = 0.3983211 0.6016789
    assert (lo, hi) == (pytest.approx(0.3983211, abs=1e-7), pytest.approx(0.6016789, abs=1e-7))


def test_default_delta_is_one_over_n_rounded_down_to_a_power_of_ten():
    assert [default_delta(n) for n in (100, 101, 1000, 25_000, 50_000)] == [1e-2, 1e-3, 1e-3, 1e-5, 1e-5]


def _randomised_response(eps: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Each example's membership bit reported truthfully with probability e^eps / (1 + e^eps): an
    eps-DP release of that bit, so no test of membership from it can beat TPR <= e^eps FPR."""
    member = rng.permutation(np.arange(2 * n) < n)
    truthful = rng.random(2 * n) < math.exp(eps) / (1 + math.exp(eps))
    return np.where(truthful, member, ~member), member


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_the_bound_exceeds_a_known_epsilon_no_more_often_than_its_confidence_allows(eps):
    """A 95% lower bound may exceed the truth in at most 5% of experiments (here 0.25% to 1.75% of 400:
    the union of two 97.5% ends is conservative); the point estimate without the intervals does in ~60%."""
    rng = np.random.default_rng(0)
    bounds, naive = [], []
    for _ in range(400):
        said, member = _randomised_response(eps, 500, rng)
        bounds.append(epsilon_lower_bound(said, member, delta=0.0)["eps_lower_bound"])
        tpr, fpr = said[member].mean(), said[~member].mean()
        naive.append(max(math.log(tpr / fpr), math.log((1 - fpr) / (1 - tpr))))
    bounds, naive = np.array(bounds), np.array(naive)
    assert (bounds > eps).mean() <= 0.025
    assert np.median(bounds) > 0.6 * eps  # not vacuous: 1,000 examples prove most of eps
    assert (naive > eps).mean() > 0.5  # the intervals are what keeps the figure a lower bound


def test_identical_member_and_nonmember_scores_prove_nothing():
    member = np.arange(400) < 200
    scores = np.tile(np.linspace(0, 1, 200), 2)  # the same 200 scores for the members and the non-members
    for threshold in (-1.0, 0.25, 0.5, 0.999, 2.0):
        m = compute_metrics(scores, member, threshold)
        assert m["eps_lower_bound"] == 0.0 and m["eps_delta"] == 1e-3
    assert epsilon_lower_bound(np.ones(400, bool), member)["eps_lower_bound"] == 0.0
    assert compute_metrics(scores, member, 0.5, delta=1e-5)["eps_delta"] == 1e-5  # a DP run's --dp-delta


def test_a_perfect_rule_proves_what_its_sample_size_allows():
    """All 200 members found, no non-member: TPR >= (0.025)^(1/200), FPR <= 1 - (0.025)^(1/200), so
    eps >= log((TPR_low - delta) / FPR_high) = log(53.7) = 3.98 with delta = 1e-3: a finite sample proves a finite epsilon."""
    member = np.arange(400) < 200
    q = 0.025 ** (1 / 200)
    want = math.log((q - 1e-3) / (1 - q))
    assert epsilon_lower_bound(member, member)["eps_lower_bound"] == pytest.approx(want, rel=1e-9)
    assert want == pytest.approx(3.98, abs=0.01)


def test_the_report_gives_each_attacks_bound_and_the_largest_per_configuration():
    import pandas as pd

    from analysis.report import epsilon_section

    df = pd.DataFrame({"experiment": ["dense", "dense+ppb"], "dataset": ["digits"] * 2,
                       "lira_eps_lower_bound": [1.234, 0.0], "loss_eps_lower_bound": [0.5, 0.25]})
    text = "\n".join(epsilon_section(df))
    assert "Largest per configuration: dense 1.23 (lira); dense+ppb 0.25 (loss)." in text
    assert "| attack | dense | dense+ppb |" in text and "| lira | 1.23 | 0.00 |" in text
    assert "accountant" not in text
    df["dp_epsilon"] = [np.nan, 7.891]  # a DP model: its accountant's epsilon beside what the attacks prove
    assert "The DP models' accountant epsilon (an upper bound, at their delta): dense+ppb 7.89." in "\n".join(epsilon_section(df))
    assert epsilon_section(df.drop(columns=["lira_eps_lower_bound", "loss_eps_lower_bound"])) == []
