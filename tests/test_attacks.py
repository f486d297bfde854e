"""Every attack against known answers, reference implementations, invariants and null cases."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import norm

from mia import attacks
from mia.attacks import ATTACKS, AttackInput, AttackSettings, balanced_shadows, run_attack, suite_attacks
from mia.evaluate import attack_input, attack_target, calibrate_threshold
from mia.metrics import best_threshold, compute_metrics
from tests.mia_synthetic import in_memory, synthetic_signals
from utils.errors import UsageError

# Small attack models keep the suite fast; otherwise the defaults.
FAST = AttackSettings(nn_max_train_rows=6000, samia_max_train_rows=1500, nn_min_class_rows=1000,
                      nn_max_val_rows=2000, nn_max_epochs=20, samia_max_epochs=4)  # SAMIA: a transformer, ~10x an MLP a row


@pytest.fixture(scope="module")
def separable():
    return in_memory(synthetic_signals(n=3000, num_shadows=8, gap=5.0, seed=0))


@pytest.fixture(scope="module")
def random_membership():
    return in_memory(synthetic_signals(n=3000, num_shadows=8, gap=0.0, seed=1))


# -- every attack ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_separates_a_separable_case(name, separable):
    m = attack_target(name, separable, 0, FAST)
    assert m["auc"] > 0.9
    assert m["accuracy"] > 0.8  # the shadow-calibrated threshold transfers to the target


@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_is_near_chance_with_random_membership(name, random_membership):
    m = attack_target(name, random_membership, 0, FAST)
    assert abs(m["auc"] - 0.5) < 0.05
    assert abs(m["accuracy"] - 0.5) < 0.05


@pytest.mark.parametrize("name", ["lira", "lira_offline", "rmia", "confidence"])
def test_one_broken_shadow_does_not_bias_a_null_case(name):
    """A diverged shadow must not bias scores by the target's membership (see balanced_shadows)."""
    s = synthetic_signals(n=4000, num_shadows=5, gap=0.0, seed=3)
    s["logits"][5] -= 6.0
    assert abs(attack_target(name, in_memory(s), 0, FAST)["auc"] - 0.5) < 0.04


@pytest.mark.parametrize("name", list(ATTACKS))
def test_calibrated_threshold_never_depends_on_the_target(name):
    """Changing the target's keep row and logits leaves every calibrated threshold as it was."""
    sig = in_memory(synthetic_signals(n=1200, num_shadows=6, gap=2.0, seed=4))
    a = attack_target(name, sig, 0, FAST)
    sig.keep[0] = ~sig.keep[0]
    sig.logits.arrays[0] = np.random.default_rng(5).normal(0, 3, sig.logits[0].shape).astype(np.float32)
    b = attack_target(name, sig, 0, FAST)
    if a["calibration"].startswith("pseudo-target"):  # calibrated by the evaluator
        assert np.isfinite(a["threshold"]) and a["threshold"] == b["threshold"]
    else:  # its own rule: scores are centred (threshold 0), the fitted thresholds are in info
        assert a["info"]["thresholds"] == b["info"]["thresholds"]
    assert a["auc"] != b["auc"]  # the target did change


def test_target_is_never_among_its_own_shadows(monkeypatch):
    sig = in_memory(synthetic_signals(n=300, num_shadows=6, seed=2))
    with pytest.raises(AssertionError):
        attack_input(sig, 1, [0, 1, 2])
    calls = []
    spec = ATTACKS["lira"]
    spy = dataclasses.replace(spec, fn=lambda inp, st: calls.append(inp) or spec.fn(inp, st))
    monkeypatch.setitem(ATTACKS, "lira", spy)
    attack_target("lira", sig, 3, FAST)  # the attack itself, then its calibration on a pseudo-target
    target = sig.logits[3]
    assert len(calls) == 2 and calls[0].target_logits is target and calls[1].target_logits is not target
    assert (calls[0].num_shadows, calls[1].num_shadows) == (6, 5)
    assert all(s is not target for inp in calls for s in inp.shadow_logits)


def test_each_target_draws_its_own_attack_randomness(monkeypatch):
    """A target's attack runs with a seed of its own (target_settings): the same for model i of every
    configuration (paired comparisons share it) and different between targets, so the attack's own noise
    varies over the targets and the interval's between-target part sees it."""
    seeds = []
    spec = ATTACKS["confidence"]
    spy = dataclasses.replace(spec, fn=lambda inp, st: seeds.append(st.seed) or spec.fn(inp, st))
    monkeypatch.setitem(ATTACKS, "confidence", spy)
    a, b = (in_memory(synthetic_signals(n=300, num_shadows=4, seed=s)) for s in (2, 3))  # two configurations
    for sig in (a, b):
        for t in (0, 1):
            attack_target("confidence", sig, t, FAST)
    assert seeds[0] != seeds[1] and seeds[:2] == seeds[2:]
    attack_target("confidence", a, 0, dataclasses.replace(FAST, seed=FAST.seed + 1))
    assert seeds[-1] not in seeds[:2]  # the study's --seed still matters


# -- LiRA ---------------------------------------------------------------------------------------------

def lira_reference(z_t, z_s, keep_s, labels, fixed: bool, online: bool, seed=0):
    """Plain per-example LiRA: loops and scipy.stats.norm, on the same shadow selection."""
    def phi_of(z, y):  # log p_y - log(1 - p_y) from a plain softmax
        p = softmax(z.astype(np.float64), axis=-1)
        return np.log(p[..., y]) - np.log(p.sum(-1) - p[..., y])

    n, q = z_t.shape[:2]
    phi_t = np.array([[phi_of(z_t[j, k], labels[j]) for k in range(q)] for j in range(n)])
    phi_s = np.array([[[phi_of(z_s[s][j, k], labels[j]) for k in range(q)] for j in range(n)] for s in range(len(z_s))])
    sel_in, sel_out, k_in, k_out = balanced_shadows(keep_s, seed)
    groups = [(sel_in, k_in), (sel_out, k_out)] if online else [(sel_out, k_out)]
    within = [k * np.mean([phi_s[sel[:, j], j].var(0) for j in range(n)]) for sel, k in groups]
    pooled = sum(within) / sum(k for _, k in groups)
    scores = []
    for j in range(n):
        total = 0.0
        for k in range(q):
            vin, vout = phi_s[sel_in[:, j], j, k], phi_s[sel_out[:, j], j, k]
            s_in, s_out = (np.sqrt(pooled),) * 2 if fixed else (vin.std(), vout.std())
            if online:
                total += (norm.logpdf(phi_t[j, k], np.median(vin), s_in + 1e-30)
                          - norm.logpdf(phi_t[j, k], np.median(vout), s_out + 1e-30))
            else:
                total += norm.logcdf(phi_t[j, k], np.median(vout), s_out + 1e-30)
        scores.append(total / q)
    return np.array(scores)


@pytest.mark.parametrize("online", [True, False])
@pytest.mark.parametrize("fixed_below", [64, 0])
def test_lira_matches_a_per_example_reference(online, fixed_below):
    s = synthetic_signals(n=80, num_shadows=8, queries=2, classes=5, gap=1.0, seed=6)
    inp = attack_input(in_memory(s), 0, list(range(1, 9)))
    st = dataclasses.replace(FAST, lira_fixed_variance_below=fixed_below)
    got = (attacks.lira_online if online else attacks.lira_offline)(inp, st).scores
    ref = lira_reference(s["logits"][0], s["logits"][1:], s["keep"][1:], s["labels"], fixed_below > 0, online)
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8)


def _phi_logits(phi: np.ndarray) -> np.ndarray:
    """Two classes, label 0: logits (phi, 0) give exactly phi = z_0 - z_1. Shape [..., N, 1, 2]."""
    z = np.zeros(phi.shape + (1, 2), np.float32)
    z[..., 0, 0] = phi
    return z


def test_lira_reaches_the_closed_form_auc_with_exact_shadows():
    """phi_in ~ N(mu_n + d, s), phi_out ~ N(mu_n, s): the likelihood ratio is monotone in phi - mu_n,
    so the optimal AUC is Phi(d / (s sqrt 2)). Shadows placed symmetrically about mu_n (+ d) make the
    medians exact (fixed variance, 16 shadows): LiRA must rank exactly as the oracle phi - mu_n."""
    rng = np.random.default_rng(0)
    n, d, s = 20_000, 1.0, 1.0
    mu = rng.normal(0, 3, n)
    offsets = np.linspace(-1, 1, 8)[:, None]
    phi_s = np.r_[mu + d + offsets, mu + offsets]                   # shadows 0-7 IN, 8-15 OUT for every example
    keep_s = np.r_[np.ones((8, n), bool), np.zeros((8, n), bool)]
    member = rng.random(n) < 0.5
    phi_t = mu + d * member + rng.normal(0, s, n)
    inp = AttackInput(_phi_logits(phi_t), _phi_logits(phi_s), keep_s, np.zeros(n, np.int64))
    auc = compute_metrics(attacks.lira_online(inp, AttackSettings()).scores, member)["auc"]
    oracle = compute_metrics(phi_t - mu, member)["auc"]
    assert auc == pytest.approx(oracle, abs=1e-4)  # float32 logits
    assert oracle == pytest.approx(norm.cdf(d / (s * np.sqrt(2))), abs=0.015)


@pytest.mark.parametrize("fixed_below", [64, 100])
def test_lira_nears_the_closed_form_auc_with_sampled_shadows(fixed_below):
    """Same model, 80 shadows drawn from it: estimating the Gaussians costs at most 0.02 AUC."""
    from training.membership import keep_matrix

    rng = np.random.default_rng(1)
    m, n, d, s = 81, 10_000, 1.0, 1.0
    keep = keep_matrix(m, n, 0)
    mu = rng.normal(0, 3, n)
    phi = mu[None] + d * keep + rng.normal(0, s, (m, n))
    inp = AttackInput(_phi_logits(phi[0]), _phi_logits(phi[1:]), keep[1:], np.zeros(n, np.int64))
    st = AttackSettings(lira_fixed_variance_below=fixed_below)
    auc = compute_metrics(attacks.lira_online(inp, st).scores, keep[0])["auc"]
    oracle = compute_metrics(phi[0] - mu, keep[0])["auc"]
    assert oracle - 0.02 < auc < oracle + 0.005
    assert oracle == pytest.approx(norm.cdf(d / (s * np.sqrt(2))), abs=0.02)


def test_phi_is_finite_where_p_y_rounds_to_one():
    z = np.array([[[60.0, 0.0, -3.0], [0.0, 2.0, 1.0]]])  # [n=1, Q=2, C=3]
    got = attacks.phi(z, np.array([0]))
    assert np.isfinite(got).all()
    assert got[0, 0] == pytest.approx(60.0 - np.log(1 + np.exp(-3.0)))
    assert got[0, 1] == pytest.approx(0.0 - logsumexp([2.0, 1.0]))


def test_balanced_shadows_equal_counts_and_membership_blind_use():
    from training.membership import keep_matrix

    keep = keep_matrix(9, 20_000, 0)
    target, shadows = keep[0], keep[1:]
    sel_in, sel_out, k_in, k_out = balanced_shadows(shadows, 0)
    assert (k_in, k_out) == (3, 4)
    assert (sel_in.sum(0) == k_in).all() and (sel_out.sum(0) == k_out).all()
    assert not (sel_in & ~shadows).any() and not (sel_out & shadows).any()
    # a given shadow is used about equally often for the target's members and non-members
    for sel in (sel_in, sel_out):
        use_members, use_others = sel[:, target].mean(1), sel[:, ~target].mean(1)
        np.testing.assert_allclose(use_members, use_others, atol=0.02)


# -- the other statistics --------------------------------------------------------------------------------

def test_modified_entropy_matches_song_and_mittal():
    rng = np.random.default_rng(0)
    p = softmax(rng.normal(0, 2, (50, 6)), axis=-1)
    y = rng.integers(0, 6, 50)
    want = []
    for pi, yi in zip(p, y):
        mentr = -(1 - pi[yi]) * np.log(pi[yi]) - sum(pi[i] * np.log(1 - pi[i]) for i in range(6) if i != yi)
        want.append(-mentr)
    np.testing.assert_allclose(attacks.neg_modified_entropy(np.log(p), y), want, rtol=1e-10)
    np.testing.assert_allclose(attacks.neg_entropy(np.log(p), y), (p * np.log(p)).sum(1), rtol=1e-10)


def exact_neg_modified_entropy(z: np.ndarray, y: int) -> float:
    """-Mentr of float64 logits z [C] in 60-digit arithmetic (mpmath), rounded once at the end."""
    import mpmath

    with mpmath.workdps(60):
        e = [mpmath.exp(mpmath.mpf(float(v))) for v in z]
        p = [v / mpmath.fsum(e) for v in e]
        others = mpmath.fsum(p[i] * mpmath.log(1 - p[i]) for i in range(len(z)) if i != y)
        return float((1 - p[y]) * mpmath.log(p[y]) + others)


@pytest.mark.parametrize("margin", [5, 10, 15, 20, 25, 30, 40])
def test_modified_entropy_keeps_the_ranking_of_confident_examples(margin):
    """Logit margin z_y - max_{i != y} z_i fixed, other logits N(0, 1): -Mentr ~ -(1 - p_y)^2 is far
    below 1e-16 from margin ~20 on. The attack's values (log_probs, then -Mentr) must rank as the
    exact ones, without ties they do not have (the old form tied all 300 examples from margin 20 on;
    scipy's log_softmax instead of log_probs misranks from margin ~35: Spearman 0.97 at 36)."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(margin)
    n, c = 300, 10
    z, y = rng.normal(0, 1, (n, c)), rng.integers(0, c, n)
    z[np.arange(n), y] = np.where(np.arange(c) == y[:, None], -np.inf, z).max(1) + margin
    want = np.array([exact_neg_modified_entropy(zi, yi) for zi, yi in zip(z, y)])
    got = attacks.neg_modified_entropy(attacks.log_probs(z), y)
    assert len(np.unique(want)) == n and len(np.unique(got)) == n
    assert spearmanr(got, want)[0] >= 0.9999
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_log_probs_is_accurate_for_the_top_class():
    z = np.array([[40.0, 0.0, -2.0], [0.0, 0.0, -np.inf], [1.0, 2.0, 3.0]])
    got = attacks.log_probs(z)
    assert got[0, 0] == pytest.approx(-np.log1p(np.exp(-40.0) + np.exp(-42.0)), rel=1e-14)  # scipy: exactly 0
    np.testing.assert_allclose(got[1], [-np.log(2), -np.log(2), -np.inf])  # tied maximum: one is masked
    np.testing.assert_allclose(got[2], np.array([1.0, 2.0, 3.0]) - logsumexp([1.0, 2.0, 3.0]), rtol=1e-15)


@pytest.mark.parametrize("gamma", [1.0, 2.0])
def test_rmia_matches_the_pairwise_definition(gamma):
    s = synthetic_signals(n=300, num_shadows=6, queries=2, classes=4, gap=1.0, seed=7)
    inp = attack_input(in_memory(s), 0, list(range(1, 7)))
    st = dataclasses.replace(FAST, rmia_gamma=gamma)
    got = attacks.rmia(inp, st).scores

    def pr(z, y):  # Pr(y|x) averaged over queries
        return softmax(z.astype(np.float64), axis=-1)[np.arange(len(y)), :, y].mean(1)

    _, sel_out, _, _ = balanced_shadows(inp.shadow_keep, st.seed)
    p_shadows = np.stack([pr(z, s["labels"]) for z in s["logits"][1:]])
    p_x = 0.5 * ((1 + st.rmia_a) * (p_shadows * sel_out).sum(0) / sel_out.sum(0) + (1 - st.rmia_a))
    ratio = pr(s["logits"][0], s["labels"]) / p_x
    want = np.array([np.mean(ratio[i] / ratio >= gamma) for i in range(len(ratio))])  # population: the pool
    np.testing.assert_allclose(got, want, atol=1e-12)


# -- bad input -----------------------------------------------------------------------------------------

def test_unknown_attack_lists_the_valid_ones():
    sig = in_memory(synthetic_signals(n=100, num_shadows=4))
    with pytest.raises(UsageError, match=f"unknown attack 'liraa'; valid: {', '.join(ATTACKS)}$"):
        run_attack("liraa", attack_input(sig, 0, [1, 2, 3, 4]))


def test_lira_with_too_few_shadows_is_one_clear_line():
    sig = in_memory(synthetic_signals(n=100, num_shadows=1))
    with pytest.raises(UsageError, match=r"^LiRA needs at least 2 shadow models \(found 1\); train with --num-shadows N$"):
        run_attack("lira", attack_input(sig, 0, [1]))
    sig = in_memory(synthetic_signals(n=100, num_shadows=2))  # balanced: the target's members have no IN shadow
    with pytest.raises(UsageError, match="LiRA needs every example IN for at least one shadow model .*--num-shadows"):
        run_attack("lira", attack_input(sig, 0, [1, 2]))


def best_threshold_reference(v: np.ndarray, is_in: np.ndarray) -> float:
    """Plain search over every distinct value: the largest balanced accuracy of `v >= t` (in integers,
    TP n_out - FP n_in), ties to the larger t; no cut above chance: just above every value."""
    best_t, best_gain = np.nextafter(v.max(), np.inf), 0
    for t in sorted(set(v.tolist()), reverse=True):  # descending: a tie keeps the larger t
        gain = (v[is_in] >= t).sum() * (~is_in).sum() - (v[~is_in] >= t).sum() * is_in.sum()
        if gain > best_gain:
            best_t, best_gain = t, gain
    return best_t


@pytest.mark.parametrize("name, per_class", [("confidence", True), ("loss", False)])
def test_threshold_attacks_thresholds_match_a_plain_reference(name, per_class):
    """The thresholds are those of a plain search over the selected shadow rows of each class (one
    group for loss), and score = value - threshold of the example's class."""
    s = synthetic_signals(n=400, num_shadows=4, queries=1, classes=5, gap=1.0, seed=9)
    inp = attack_input(in_memory(s), 0, [1, 2, 3, 4])
    out = ATTACKS[name].fn(inp, FAST)
    p = softmax(s["logits"][:, :, 0].astype(np.float64), axis=-1)[:, np.arange(400), s["labels"]]  # [M, N] p_y
    v = p if name == "confidence" else np.log(p)
    sel_in, sel_out, _, _ = balanced_shadows(inp.shadow_keep, FAST.seed)
    groups = s["labels"] if per_class else np.zeros(400, int)
    want = []
    for g in range(groups.max() + 1):
        rows = (sel_in | sel_out) & (groups == g)
        want.append(best_threshold_reference(v[1:][rows], sel_in[rows]))
    assert out.threshold == 0.0 and len(want) == (5 if per_class else 1)
    np.testing.assert_allclose(out.info["thresholds"], want, rtol=1e-12)
    np.testing.assert_allclose(out.scores, v[0] - np.array(want)[groups], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("num_shadows", [1, 2])
def test_few_shadow_thresholds_never_see_the_scored_examples_rows(num_shadows):
    """Cross-fitting: flipping the shadow labels (IN/OUT) of one example changes other examples'
    thresholds but never that example's own score. Without it, its own row would move its class's
    threshold: with one shadow the label is the complement of the target's membership."""
    s = synthetic_signals(n=300, num_shadows=num_shadows, queries=1, classes=3, gap=1.0, seed=10)
    inp = attack_input(in_memory(s), 0, list(range(1, num_shadows + 1)))
    fn = ATTACKS["confidence"].fn
    base = fn(inp, FAST)
    assert base.calibration.endswith("cross-fitted") and len(base.info["thresholds"]) == attacks.THRESHOLD_FOLDS
    changed = 0
    for n in range(0, 300, 10):
        keep = inp.shadow_keep.copy()
        keep[:, n] = ~keep[:, n]
        scores = fn(dataclasses.replace(inp, shadow_keep=keep), FAST).scores
        assert scores[n] == base.scores[n]
        changed += (scores != base.scores).any()
    assert changed > 0  # the flips do move thresholds: the invariance is not vacuous


@pytest.mark.parametrize("name", ["confidence", "modified_entropy"])
@pytest.mark.parametrize("num_shadows", [1, 2])
def test_threshold_attacks_with_few_shadows_are_unbiased_on_a_null_case(name, num_shadows):
    """Membership unrelated to the signals, C = 100: the mean AUC over seeds must be 0.5. Thresholds
    fitted on every shadow row (1 shadow: labels = the target's non-membership) gave 0.483-0.491
    here, every seed below 0.5 (docs/attacks.md, 2026-11-29)."""
    aucs = []
    for seed in range(12):
        s = synthetic_signals(n=6000, num_shadows=num_shadows, queries=1, classes=100, gap=0.0, seed=seed)
        out = ATTACKS[name].fn(attack_input(in_memory(s), 0, list(range(1, num_shadows + 1))), FAST)
        aucs.append(compute_metrics(out.scores, s["keep"][0])["auc"])
    assert abs(np.mean(aucs) - 0.5) < 0.005


@pytest.mark.parametrize("name", ["confidence", "loss"])
def test_threshold_attacks_run_with_one_shadow(name):
    sig = in_memory(synthetic_signals(n=1000, num_shadows=1, gap=5.0))
    m = attack_target(name, sig, 0, FAST)
    assert m["auc"] > 0.9 and m["accuracy"] > 0.8


def test_calibration_reports_why_it_cannot_run():
    sig = in_memory(synthetic_signals(n=400, num_shadows=3, gap=3.0))  # pseudo-target left with 2 shadows
    thr, why = calibrate_threshold("lira", sig, 0, FAST)
    assert thr is None and why.startswith("not calibrated (LiRA needs every example IN")
    m = attack_target("lira", sig, 0, FAST)
    assert "accuracy" not in m and m["auc"] > 0.9


@pytest.mark.parametrize("fixed", [False, True])
def test_lira_calibration_keeps_the_targets_variance_mode(monkeypatch, fixed):
    """With exactly lira_fixed_variance_below shadows the target uses per-example variances; its
    pseudo-target (one shadow fewer) must too, or the threshold is calibrated on another score."""
    sig = in_memory(synthetic_signals(n=300, num_shadows=6, gap=2.0, seed=8))
    outs = []
    spec = ATTACKS["lira"]
    spy = dataclasses.replace(spec, fn=lambda inp, st: outs.append(spec.fn(inp, st)) or outs[-1])
    monkeypatch.setitem(ATTACKS, "lira", spy)
    m = attack_target("lira", sig, 0, dataclasses.replace(FAST, lira_fixed_variance_below=6 + fixed))
    assert [o.info["fixed_variance"] for o in outs] == [fixed, fixed]  # the target, then its pseudo-target
    assert m["calibration"].startswith("pseudo-target")
    assert m["threshold"] == best_threshold(outs[1].scores, sig.keep[1])  # calibrated on that run


def test_samia_without_sensitivity_is_refused():
    sig = in_memory(synthetic_signals(n=100, num_shadows=4), sensitivity=False)
    with pytest.raises(UsageError, match="SAMIA needs sensitivity.npy"):
        run_attack("samia", attack_input(sig, 0, [1, 2, 3, 4]))


def test_suites_cover_the_study():
    """The study's attacks, each in its suite (a subset: a newly registered attack joins its suite)."""
    advanced = {"lira", "lira_offline", "shokri_nn", "top3_nn", "class_label_nn", "samia", "rmia"}
    assert advanced <= set(suite_attacks("advanced"))
    assert {"confidence", "entropy", "modified_entropy", "neural_network", "loss"} <= set(suite_attacks("wemem"))
    assert sorted(suite_attacks("advanced") + suite_attacks("wemem")) == sorted(ATTACKS)  # every attack in one suite
