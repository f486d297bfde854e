"""The attack registry and the statistical attacks (REFERENCE.md section 4).

Every attack is `fn(inp: AttackInput, settings: AttackSettings) -> AttackOutput`: one score per pool
example (higher = "member") and, where the attack defines its own decision rule, the threshold that
rule uses. An AttackInput carries the target's signals, its shadows' signals and the shadows' keep
rows: the target's own membership is not in it, so no attack can peek at it.
Thresholds are always calibrated on shadows (per class where the attack says so); attacks without
their own rule are calibrated by the evaluator on a shadow playing the target (mia/evaluate.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from scipy.special import log_softmax, logsumexp
from scipy.stats import norm

from mia.metrics import best_threshold
from utils.errors import UsageError


@dataclass
class AttackInput:
    target_logits: np.ndarray          # [N, Q, C] float32
    shadow_logits: np.ndarray          # [S, N, Q, C]
    shadow_keep: np.ndarray            # [S, N] bool: shadow s trained on example n
    labels: np.ndarray                 # [N] int
    target_sens: np.ndarray | None = None   # [N, C] SAMIA sensitivity
    shadow_sens: np.ndarray | None = None   # [S, N, C]

    @property
    def num_shadows(self) -> int:
        return len(self.shadow_keep)


@dataclass
class AttackSettings:
    """Every knob of every attack, recorded with the results."""
    seed: int = 0
    device: str = "cpu"
    lira_fixed_variance_below: int = 64   # LiRA: global variance when fewer shadows than this (Carlini et al.)
    rmia_a: float = 0.3                   # RMIA offline: P(x) = ((1 + a) P_out(x) + (1 - a)) / 2
    rmia_gamma: float = 1.0               # RMIA: likelihood-ratio threshold against population samples
    nn_optimizer: str = "adam"            # "adam" (lr 1e-3) or "sgd" (mia_prune: lr 1e-3, momentum 0.9, wd 5e-4)
    nn_lr: float = 1e-3
    nn_batch_size: int = 128
    nn_max_epochs: int = 100
    nn_patience: int = 5                  # early stopping: epochs without validation-loss improvement
    nn_max_train_rows: int = 60_000       # cap on shadow rows used to train an attack model (balanced IN/OUT)
    nn_max_val_rows: int = 10_000         # cap on held-out shadow rows (early stopping + threshold)
    samia_max_epochs: int = 30

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttackOutput:
    scores: np.ndarray                   # [N] float64, higher = member
    threshold: float | None = None       # decision threshold from the attack's own shadow calibration
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    fn: Callable[[AttackInput, AttackSettings], AttackOutput]
    suite: str                 # "advanced" or "wemem"
    extra: bool = False        # an extra of its suite (RMIA, offline LiRA, loss)
    min_shadows: int = 1
    needs_sensitivity: bool = False
    description: str = ""


# -- signal transforms ------------------------------------------------------------------------------

def log_probs(logits: np.ndarray) -> np.ndarray:
    """log softmax in float64 (stable)."""
    return log_softmax(np.asarray(logits, np.float64), axis=-1)


def posteriors(logits: np.ndarray) -> np.ndarray:
    """Posterior vector from the identity query (query 0): [..., N, Q, C] -> [..., N, C]."""
    return np.exp(log_probs(logits[..., 0, :]))


def true_class(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """x[..., n, q, labels[n]] for x shaped [..., N, Q, C] -> [..., N, Q]."""
    idx = np.broadcast_to(labels[:, None, None], x.shape[:-1] + (1,))
    return np.take_along_axis(x, idx, axis=-1)[..., 0]


def lira_phi(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log p_y - log sum_{y' != y} p_y' = z_y - logsumexp(z_{y' != y}), float64 [..., N, Q].
    Written on logits so it stays finite when p_y rounds to 1 in float32 (fragile numerics)."""
    z = np.asarray(logits, np.float64)
    is_y = np.eye(z.shape[-1], dtype=bool)[labels][:, None, :]  # [N, 1, C]
    return true_class(z, labels) - logsumexp(np.where(is_y, -np.inf, z), axis=-1)


# -- LiRA (Carlini et al., S&P 2022) ----------------------------------------------------------------

def equal_count_selection(sel: np.ndarray, seed: int = 0) -> np.ndarray:
    """Per example (column), keep k randomly chosen True entries of sel [S, N], k = the smallest count
    over examples. Fragile spot: under the balanced keep matrix an example's shadow IN/OUT counts
    depend on the target's own membership (M // 2 - 1 vs M // 2 IN shadows), and truncating in shadow
    order (as the LiRA reference code does) then lets one unusual shadow bias every score; with a
    random, equal-size choice the chance that a given shadow is used no longer depends on the target's
    membership (tests/test_attacks.py checks the null case with one broken shadow)."""
    k = int(sel.sum(0).min())
    u = np.random.default_rng(seed).random(sel.shape)
    pri = np.where(sel, u, np.inf)
    kth = np.sort(pri, axis=0)[k - 1] if k > 0 else np.full(sel.shape[1], -np.inf)
    return sel & (pri <= kth)


def _gauss_params(phi: np.ndarray, sel: np.ndarray, fixed: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-example median and std of phi [S, N, Q] over an equal-size selection of the shadows in sel."""
    vals = np.where(equal_count_selection(sel, seed)[..., None], phi, np.nan)
    mu = np.nanmedian(vals, axis=0)
    sd = np.full_like(mu, np.nanstd(vals)) if fixed else np.nanstd(vals, axis=0)
    return mu, sd + 1e-30


def _need_in_out(inp: AttackInput, need_in: bool) -> None:
    """With the balanced keep matrix over M models, an example is IN for M // 2 of them; without the
    target that leaves M // 2 - 1 IN shadows for the target's members: 3 shadows are the minimum."""
    ins, outs = inp.shadow_keep.sum(0), (~inp.shadow_keep).sum(0)
    if (need_in and ins.min() < 1) or outs.min() < 1:
        raise UsageError(f"LiRA needs every example IN for one shadow and OUT for another: at least "
                         f"{3 if need_in else 1} shadow models (this run has {inp.num_shadows}); train with --num-shadows N")


def lira_online(inp: AttackInput, st: AttackSettings) -> AttackOutput:
    _need_in_out(inp, need_in=True)
    phi_s = lira_phi(inp.shadow_logits, inp.labels)  # [S, N, Q]
    phi_t = lira_phi(inp.target_logits, inp.labels)  # [N, Q]
    fixed = inp.num_shadows < st.lira_fixed_variance_below
    mu_in, sd_in = _gauss_params(phi_s, inp.shadow_keep, fixed, st.seed)
    mu_out, sd_out = _gauss_params(phi_s, ~inp.shadow_keep, fixed, st.seed + 1)
    score = norm.logpdf(phi_t, mu_in, sd_in) - norm.logpdf(phi_t, mu_out, sd_out)
    return AttackOutput(score.mean(axis=1), info={"fixed_variance": fixed})


def lira_offline(inp: AttackInput, st: AttackSettings) -> AttackOutput:
    """One-sided test of the paper: log P[phi' <= phi_target] under N(mu_out, s_out)."""
    _need_in_out(inp, need_in=False)
    phi_s = lira_phi(inp.shadow_logits, inp.labels)
    phi_t = lira_phi(inp.target_logits, inp.labels)
    fixed = inp.num_shadows < st.lira_fixed_variance_below
    mu_out, sd_out = _gauss_params(phi_s, ~inp.shadow_keep, fixed, st.seed + 1)
    return AttackOutput(norm.logcdf(phi_t, mu_out, sd_out).mean(axis=1), info={"fixed_variance": fixed})


# -- RMIA (Zarifzadeh, Liu, Shokri, ICML 2024), offline ---------------------------------------------

def rmia(inp: AttackInput, st: AttackSettings) -> AttackOutput:
    """Pr(x|theta) = p_y averaged over queries. P(x) from OUT reference models with the offline
    correction ((1+a) P_out + (1-a)) / 2. Population z = every pool example (no membership used).
    score(x) = fraction of z with [Pr(x|t)/P(x)] / [Pr(z|t)/P(z)] >= gamma."""
    _need_in_out(inp, need_in=False)
    p_t = np.exp(true_class(log_probs(inp.target_logits), inp.labels)).mean(-1)           # [N]
    p_s = np.exp(true_class(log_probs(inp.shadow_logits), inp.labels)).mean(-1)           # [S, N]
    out = equal_count_selection(~inp.shadow_keep, st.seed)
    p_out = (p_s * out).sum(0) / out.sum(0)
    p_x = 0.5 * ((1 + st.rmia_a) * p_out + (1 - st.rmia_a))
    ratio = p_t / p_x
    z = np.sort(ratio)
    # ratio_x / ratio_z >= gamma  <=>  ratio_z <= ratio_x / gamma
    score = np.searchsorted(z, ratio / st.rmia_gamma, side="right") / len(z)
    return AttackOutput(score + 1e-12 * ratio / (1 + ratio))  # tiny tie-break by the ratio itself


# -- Threshold attacks (Song & Mittal 2021; Yeom et al. 2018) -----------------------------------------

def _confidence(lp, y):
    return np.exp(true_class(lp, y))


def _neg_entropy(lp, y):
    return (np.exp(lp) * lp).sum(-1)


def _neg_modified_entropy(lp, y):
    """-Mentr = (1 - p_y) log p_y + sum_{i != y} p_i log(1 - p_i)."""
    p = np.exp(lp)
    p_y = true_class(p, y)
    log1m = np.log1p(-np.clip(p, 0, 1 - 1e-12))
    others = (p * log1m).sum(-1) - p_y * true_class(log1m, y)
    return (1 - p_y) * true_class(lp, y) + others


def _neg_loss(lp, y):
    return true_class(lp, y)  # -CE = log p_y


def _threshold_attack(value_fn, per_class: bool):
    """Score = value - threshold of the example's class (or one global threshold), thresholds chosen
    on the shadows' IN/OUT rows; the decision boundary is then 0."""

    def attack(inp: AttackInput, st: AttackSettings) -> AttackOutput:
        # identity query only (query axis kept with size 1, then dropped)
        v_t = value_fn(log_probs(inp.target_logits[..., :1, :]), inp.labels)[..., 0]   # [N]
        v_s = value_fn(log_probs(inp.shadow_logits[..., :1, :]), inp.labels)[..., 0]   # [S, N]
        groups = inp.labels if per_class else np.zeros_like(inp.labels)
        thr = np.zeros(int(groups.max()) + 1)
        for c in np.unique(groups):
            cols = groups == c
            thr[c] = best_threshold(v_s[:, cols].ravel(), inp.shadow_keep[:, cols].ravel())
        thr[~np.isfinite(thr)] = np.finfo(np.float64).max / 4
        return AttackOutput(v_t - thr[groups], threshold=0.0, info={"thresholds": thr.tolist()})

    return attack


def _nn(name):
    def attack(inp, st):
        from mia import nn_attacks

        return nn_attacks.ATTACK_FNS[name](inp, st)

    return attack


# Registry: attack key (CSV column prefix) -> spec.
ATTACKS: dict[str, AttackSpec] = {
    "lira": AttackSpec(lira_online, "advanced", min_shadows=3, description="LiRA online (Carlini et al. 2022)"),
    "shokri_nn": AttackSpec(_nn("shokri_nn"), "advanced", min_shadows=2, description="one MLP per class (Shokri et al. 2017)"),
    "top3_nn": AttackSpec(_nn("top3_nn"), "advanced", min_shadows=2, description="MLP on top-3 posteriors (ML-Leaks)"),
    "class_label_nn": AttackSpec(_nn("class_label_nn"), "advanced", min_shadows=2, description="MLP on posterior + one-hot label"),
    "samia": AttackSpec(_nn("samia"), "advanced", min_shadows=2, needs_sensitivity=True, description="SAMIA transformer (Yuan & Zhang 2022)"),
    "rmia": AttackSpec(rmia, "advanced", extra=True, min_shadows=1, description="RMIA offline (Zarifzadeh et al. 2024)"),
    "lira_offline": AttackSpec(lira_offline, "advanced", extra=True, min_shadows=1, description="LiRA offline, one-sided"),
    "confidence": AttackSpec(_threshold_attack(_confidence, True), "wemem", description="p_y, per-class thresholds"),
    "entropy": AttackSpec(_threshold_attack(_neg_entropy, True), "wemem", description="-H(p), per-class thresholds"),
    "modified_entropy": AttackSpec(_threshold_attack(_neg_modified_entropy, True), "wemem", description="-Mentr, per-class thresholds"),
    "neural_network": AttackSpec(_nn("neural_network"), "wemem", min_shadows=2, description="MLP 512-256-128 on the posterior"),
    "loss": AttackSpec(_threshold_attack(_neg_loss, False), "wemem", extra=True, description="-CE, global threshold (Yeom et al. 2018)"),
}


def suite_attacks(suite: str) -> list[str]:
    return [k for k, s in ATTACKS.items() if s.suite == suite]


def check_attacks(names: list[str]) -> None:
    bad = [n for n in names if n not in ATTACKS]
    if bad:
        raise UsageError(f"unknown attack {bad[0]!r}; valid: {', '.join(ATTACKS)}")
