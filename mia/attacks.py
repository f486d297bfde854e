"""The attack registry and the statistical attacks (docs/attacks.md: formulas, sources, settings).

Every attack is `fn(inp: AttackInput, st: AttackSettings) -> AttackOutput`: one score per pool
example, higher = "member". An AttackInput holds the target's signals, its shadows' signals and the
shadows' keep rows; the target's own membership is not in it, so no attack can peek at it.
Attacks that define their own decision rule (per-class thresholds, learned attacks) calibrate it on
shadows and return `score - threshold` with threshold 0; the others (LiRA, RMIA) are calibrated by
the evaluator on a shadow playing the target (mia/evaluate.py).

Logits may be memory-mapped [S] x [N, Q, C] float32 stacks (artifacts/rundir.py): every transform runs
per model and in row chunks, in float64, so memory stays bounded at N = 50,000, Q = 18, C = 100.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy.special import log_softmax, logsumexp
from scipy.stats import norm

from artifacts import paths
from mia import nn_attacks
from mia.metrics import group_thresholds
from mia.shadows import (AttackInput, AttackOutput, AttackSettings, balanced_shadows, require_shadows,
                         rng_for)
from utils.errors import UsageError

CHUNK = 8192  # rows per float64 block in the transforms


@dataclass(frozen=True)
class AttackSpec:
    fn: Callable[[AttackInput, AttackSettings], AttackOutput]
    title: str                 # name in messages
    suite: str                 # "advanced" or "wemem"
    min_shadows: int = 1
    needs_sensitivity: bool = False
    settings: tuple[str, ...] = ()  # prefixes of the AttackSettings fields it uses (recorded with results)
    description: str = ""


# -- signal transforms (per model, chunked, float64) ---------------------------------------------

def per_example(fn, logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """fn(z float64 [n, Q, C], y [n]) over row chunks of one model's logits, concatenated."""
    return np.concatenate([fn(np.asarray(logits[i:i + CHUNK], np.float64), labels[i:i + CHUNK])
                           for i in range(0, len(labels), CHUNK)])


def per_model(fn, stack: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """per_example for each model of a stack: [S, N, ...]."""
    return np.stack([per_example(fn, lg, labels) for lg in stack])


def true_class(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x[n, ..., y[n]] for x shaped [n, ..., C] -> [n, ...]."""
    idx = y.reshape((-1,) + (1,) * (x.ndim - 1))
    return np.take_along_axis(x, np.broadcast_to(idx, x.shape[:-1] + (1,)), axis=-1)[..., 0]


def phi(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's logit scaling phi = log p_y - log sum_{y' != y} p_y' = z_y - logsumexp_{y' != y} z_y'
    [n, Q]. Written on logits, so it stays finite where p_y rounds to 1 (fragile numerics)."""
    others = np.where(np.arange(z.shape[-1]) == y[:, None, None], -np.inf, z)
    return true_class(z, y) - logsumexp(others, axis=-1)


def p_true_mean(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pr(y | x, theta) averaged over queries [n] (RMIA)."""
    return np.exp(true_class(log_softmax(z, axis=-1), y)).mean(axis=-1)


# -- LiRA (Carlini et al., S&P 2022) --------------------------------------------------------------

class Fit(NamedTuple):
    mu: np.ndarray   # [N, Q] per-example median
    var: np.ndarray  # [N, Q] per-example variance
    k: int           # shadows per example


def gaussian_fit(phi_s: np.ndarray, sel: np.ndarray, k: int) -> Fit:
    """Median and variance of phi_s [S, N, Q] over the k shadows selected per example by sel [S, N]
    (exactly k per example). Vectorized: unselected entries sort to the end."""
    vals = np.sort(np.where(sel[..., None], phi_s, np.inf), axis=0)[:k]  # [k, N, Q]
    return Fit(np.median(vals, axis=0), vals.var(axis=0), k)


def global_sigma(phi_s: np.ndarray, fits: list[Fit]) -> float:
    """Fixed variance: one sigma for every example and both Gaussians, the within-example variance
    pooled over the fitted groups. When every group holds one shadow it is zero, and the reference
    code's std over all shadow values is used. Online, one shared sigma only scales the score."""
    var = sum(f.k * f.var.mean() for f in fits) / sum(f.k for f in fits)
    return float(np.sqrt(var)) if var > 0 else float(phi_s.std())


def _phis(inp: AttackInput) -> tuple[np.ndarray, np.ndarray]:
    return per_model(phi, inp.shadow_logits, inp.labels), per_example(phi, inp.target_logits, inp.labels)


def pseudo_target_settings(st: AttackSettings) -> AttackSettings:
    """Settings for a rerun on a pseudo-target, which has one shadow fewer than the real target
    (threshold calibration, mia/evaluate.py): every choice made from the shadow count must stay the
    target's, or the threshold is calibrated on another score. Fragile spot: with exactly
    lira_fixed_variance_below shadows the target uses per-example variances and the pseudo-target
    would switch to the fixed one; lowering the bound by one keeps the target's mode either way."""
    return replace(st, lira_fixed_variance_below=st.lira_fixed_variance_below - 1)


def lira_online(inp: AttackInput, st: AttackSettings) -> AttackOutput:
    """log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out), averaged over queries."""
    require_shadows(inp, "LiRA", need_in=True)
    phi_s, phi_t = _phis(inp)
    sel_in, sel_out, k_in, k_out = balanced_shadows(inp.shadow_keep, st.seed)
    f_in, f_out = gaussian_fit(phi_s, sel_in, k_in), gaussian_fit(phi_s, sel_out, k_out)
    fixed = inp.num_shadows < st.lira_fixed_variance_below
    s_in, s_out = (global_sigma(phi_s, [f_in, f_out]),) * 2 if fixed else (np.sqrt(f_in.var), np.sqrt(f_out.var))
    # + 1e-30 as the reference code: a zero per-example variance (one shadow) stays finite
    score = norm.logpdf(phi_t, f_in.mu, s_in + 1e-30) - norm.logpdf(phi_t, f_out.mu, s_out + 1e-30)
    return AttackOutput(score.mean(axis=1), info={"fixed_variance": fixed, "shadows_in": k_in, "shadows_out": k_out})


def lira_offline(inp: AttackInput, st: AttackSettings) -> AttackOutput:
    """The paper's one-sided test: log Pr[Z <= phi], Z ~ N(mu_out, s_out), averaged over queries
    (large when the target is more confident than the OUT shadows)."""
    require_shadows(inp, "offline LiRA", need_in=False)
    phi_s, phi_t = _phis(inp)
    _, sel_out, _, k_out = balanced_shadows(inp.shadow_keep, st.seed)
    f_out = gaussian_fit(phi_s, sel_out, k_out)
    fixed = inp.num_shadows < st.lira_fixed_variance_below
    s_out = global_sigma(phi_s, [f_out]) if fixed else np.sqrt(f_out.var)
    score = norm.logcdf(phi_t, f_out.mu, s_out + 1e-30)
    return AttackOutput(score.mean(axis=1), info={"fixed_variance": fixed, "shadows_out": k_out})


# -- RMIA (Zarifzadeh, Liu, Shokri, ICML 2024), offline --------------------------------------------

def rmia(inp: AttackInput, st: AttackSettings) -> AttackOutput:
    """ratio(x) = Pr(x|target) / P(x), P(x) = ((1 + a) P_out(x) + (1 - a)) / 2, P_out = mean over the
    OUT shadows (balanced_shadows); score(x) = fraction of the population z with
    ratio(x) / ratio(z) >= gamma. Population = every pool example (no membership used). The score
    is a monotone map of ratio(x), so any population gives the same ranking (it matters for the
    score's scale only); sorting + searchsorted keeps it O(N log N) in time and O(N) in memory."""
    require_shadows(inp, "RMIA", need_in=False)
    p_t = per_example(p_true_mean, inp.target_logits, inp.labels)
    p_s = per_model(p_true_mean, inp.shadow_logits, inp.labels)
    _, out, _, k_out = balanced_shadows(inp.shadow_keep, st.seed)
    p_out = (p_s * out).sum(0) / k_out
    ratio = p_t / (0.5 * ((1 + st.rmia_a) * p_out + (1 - st.rmia_a)))
    z = np.sort(ratio)
    return AttackOutput(np.searchsorted(z, ratio / st.rmia_gamma, side="right") / len(z))  # ratio_z <= ratio_x / gamma


# -- threshold attacks (Song & Mittal 2021; Yeom et al. 2018), on query 0 --------------------------

def confidence(lp: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.exp(true_class(lp, y))


def neg_entropy(lp: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.exp(lp) * lp).sum(-1)


def log_probs(z: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, accurate for the largest class too. Fragile numerics: scipy's
    log_softmax takes log(1 + s) of the rounded sum, so log p_max loses digits as s -> 0 and is
    exactly 0 once the other classes sum below 1e-16 (a logit margin of ~37); here log p_max =
    -log1p(s), s = sum over the other classes (masked, not subtracted from a sum holding 1)."""
    d = z - z.max(axis=-1, keepdims=True)
    top = np.arange(z.shape[-1]) == d.argmax(axis=-1)[..., None]  # one class even when the maximum ties
    s = np.where(top, 0.0, np.exp(d)).sum(axis=-1, keepdims=True)
    return d - np.log1p(s)


def log1mexp(a: np.ndarray) -> np.ndarray:
    """log(1 - e^a) for a <= 0, accurate at both ends (Maechler 2012): log(-expm1(a)) near 0, where
    1 - e^a cancels; log1p(-e^a) below -log 2, where 1 - e^a rounds to 1 and its log to 0."""
    with np.errstate(divide="ignore"):  # both branches are evaluated; a = 0 gives -inf in the unused one
        return np.where(a > -np.log(2), np.log(-np.expm1(a)), np.log1p(-np.exp(a)))


def neg_modified_entropy(lp: np.ndarray, y: np.ndarray) -> np.ndarray:
    """-Mentr = (1 - p_y) log p_y + sum_{i != y} p_i log(1 - p_i), each term from log p (log_probs).
    Fragile numerics: for a confident example both terms are ~(1 - p_y)^2, far below 1e-16, so
    1 - p_y = -expm1(log p_y), log(1 - p_i) = log1mexp(log p_i), and y is masked out of the sum
    (subtracting its term from a sum holding it leaves an error ~1e-15, which tied most confident
    examples). log(1 - p) is floored at log 1e-30 as in Song & Mittal's code. lp [n, C], y [n]."""
    lp_y = true_class(lp, y)
    log_1m = np.maximum(log1mexp(lp), np.log(1e-30))
    others = np.where(np.arange(lp.shape[-1]) == y[:, None], 0.0, np.exp(lp) * log_1m).sum(-1)
    return -np.expm1(lp_y) * lp_y + others  # both terms <= 0: no cancellation


def neg_loss(lp: np.ndarray, y: np.ndarray) -> np.ndarray:
    return true_class(lp, y)  # -CE = log p_y


THRESHOLD_FOLDS = 5  # cross-fitting folds of the threshold attacks when shadows cannot be balanced


def threshold_splits(inp: AttackInput, seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, ...]]]:
    """Shadow rows for the thresholds: IN mask [S, N], rows used [S, N], and (fit, apply) example
    masks [N]: the thresholds fitted on the rows of `fit` examples score the `apply` examples.

    With 3+ shadows: balanced_shadows rows, one fit on every example. With fewer no equal-count
    selection exists (k_in or k_out = 0) and every shadow row is used; then the shadows' IN/OUT
    labels are a function of the target's membership (1 shadow: exactly its complement). Thresholds
    fitted on an example's own rows see its membership and bias the ranking against it (null case,
    C = 100: AUC 0.483 instead of 0.5). So they are cross-fitted: examples are split into
    THRESHOLD_FOLDS folds (class-stratified, seeded) and each fold is scored with thresholds fitted
    on the other folds' rows only, as with disjoint shadow data (Song & Mittal's setting). Under the
    keep matrix columns are independent, so those rows carry nothing about the scored examples'
    membership."""
    sel_in, sel_out, k_in, k_out = balanced_shadows(inp.shadow_keep, seed)
    n = len(inp.labels)
    if k_in and k_out:
        return sel_in, sel_in | sel_out, [(np.ones(n, bool), np.ones(n, bool))]
    u = rng_for(seed, "threshold_folds").random(n)
    fold = np.empty(n, np.int64)
    fold[np.lexsort((u, inp.labels))] = np.arange(n) % THRESHOLD_FOLDS  # random within class, each class spread
    splits = [(fold != f, fold == f) for f in range(THRESHOLD_FOLDS)]
    return inp.shadow_keep, np.ones(inp.shadow_keep.shape, bool), splits


def threshold_attack(value: Callable, per_class: bool) -> Callable:
    """score = value - threshold of the example's class (or one global threshold); thresholds
    maximise balanced accuracy over the shadows' IN/OUT rows of that class (threshold_splits: the
    balanced_shadows rows, or cross-fitted with fewer than 3 shadows). Decision boundary 0.
    info["thresholds"]: per class, one list per fold when cross-fitted."""

    def on_query0(z, y):
        return value(log_probs(z[:, 0]), y)

    def attack(inp: AttackInput, st: AttackSettings) -> AttackOutput:
        v_t = per_example(on_query0, inp.target_logits, inp.labels)
        v_s = per_model(on_query0, inp.shadow_logits, inp.labels)
        groups = inp.labels if per_class else np.zeros_like(inp.labels)
        num_groups = int(groups.max()) + 1
        is_in, rows, splits = threshold_splits(inp, st.seed)
        thr, fitted = np.empty(len(v_t)), []
        for fit, apply in splits:
            r = rows & fit
            fitted.append(group_thresholds(v_s[r], is_in[r], np.broadcast_to(groups, v_s.shape)[r], num_groups))
            thr[apply] = fitted[-1][groups[apply]]
        how = "shadows' IN/OUT rows (score = value - threshold)" + (", cross-fitted" if len(splits) > 1 else "")
        info = [t.tolist() for t in fitted] if len(splits) > 1 else fitted[0].tolist()
        return AttackOutput(v_t - thr, 0.0, how, {"thresholds": info})

    return attack


# Registry: attack key (CSV column prefix) -> spec.
ATTACKS: dict[str, AttackSpec] = {
    "lira": AttackSpec(lira_online, "LiRA", "advanced", min_shadows=2, settings=("lira_",),
                       description="LiRA online (Carlini et al. 2022)"),
    "lira_offline": AttackSpec(lira_offline, "offline LiRA", "advanced", settings=("lira_",),
                               description="LiRA offline, one-sided test"),
    "shokri_nn": AttackSpec(nn_attacks.shokri_nn, "Shokri-NN", "advanced", min_shadows=2, settings=("nn_",),
                            description="one MLP per class (Shokri et al. 2017)"),
    "top3_nn": AttackSpec(nn_attacks.top3_nn, "Top3-NN", "advanced", min_shadows=2, settings=("nn_",),
                          description="MLP on the sorted top-3 posteriors (Salem et al. 2019)"),
    "class_label_nn": AttackSpec(nn_attacks.class_label_nn, "ClassLabel-NN", "advanced", min_shadows=2, settings=("nn_",),
                                 description="MLP on posterior ++ one-hot label"),
    "samia": AttackSpec(nn_attacks.samia, "SAMIA", "advanced", min_shadows=2, needs_sensitivity=True,
                        settings=("nn_", "samia_"), description="SAMIA transformer (Yuan & Zhang 2022)"),
    "confidence": AttackSpec(threshold_attack(confidence, True), "confidence", "wemem",
                             description="p_y, per-class thresholds (Song & Mittal 2021)"),
    "entropy": AttackSpec(threshold_attack(neg_entropy, True), "entropy", "wemem",
                          description="-H(p), per-class thresholds (Song & Mittal 2021)"),
    "modified_entropy": AttackSpec(threshold_attack(neg_modified_entropy, True), "modified entropy", "wemem",
                                   description="-Mentr, per-class thresholds (Song & Mittal 2021)"),
    "neural_network": AttackSpec(nn_attacks.neural_network, "NN", "wemem", min_shadows=2, settings=("nn_",),
                                 description="MLP 512-256-128 on the posterior (mia_prune / WeMeM)"),
    "loss": AttackSpec(threshold_attack(neg_loss, False), "loss", "wemem",
                       description="-CE, global threshold (Yeom et al. 2018)"),
    "rmia": AttackSpec(rmia, "RMIA", "advanced", settings=("rmia_",),
                       description="RMIA offline (Zarifzadeh et al. 2024)"),
}


def suite_attacks(suite: str) -> list[str]:
    """Every attack of a suite, extras included (the scripts' default)."""
    return [k for k, s in ATTACKS.items() if s.suite == suite]


def check_attacks(names: Sequence[str]) -> None:
    bad = [n for n in names if n not in ATTACKS]
    if bad:
        raise UsageError(f"unknown attack {bad[0]!r}; valid: {', '.join(ATTACKS)}")


def check_runnable(name: str, num_shadows: int, has_sensitivity: bool) -> None:
    spec = ATTACKS[name]
    if num_shadows < spec.min_shadows:
        raise UsageError(f"{spec.title} needs at least {spec.min_shadows} shadow model{'s' * (spec.min_shadows > 1)} "
                         f"(found {num_shadows}); train with --num-shadows N")
    if spec.needs_sensitivity and not has_sensitivity:
        raise UsageError(f"{spec.title} needs {paths.SENSITIVITY} for the target and every shadow; recompute the signals: python -m training.signals RUNS_DIR")


def run_attack(name: str, inp: AttackInput, st: AttackSettings | None = None) -> AttackOutput:
    """The one entry point: validate the name and the inputs, then run the attack."""
    check_attacks([name])
    check_runnable(name, inp.num_shadows, inp.target_sens is not None and inp.shadow_sens is not None)
    return ATTACKS[name].fn(inp, st or AttackSettings())
