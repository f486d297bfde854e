"""The attacker who sees both models (docs/attacks.md, "The pair attack"): a dense model and a pruned (or
fine-tuned) model released together, model i of both trained on the same subset (CompLeak, 2025, its "SR"
setting). Each example's pair of logit-scaled confidences (phi_A, phi_B) is scored with a 2-D Gaussian
likelihood ratio, LiRA's test in two dimensions, fitted on the shadow PAIRS (shadow i of A with shadow i of B).

Why not an entry of mia.attacks.ATTACKS: an attack there scores one target from one AttackInput (one
configuration's target and shadows), and every evaluation runs every entry on every configuration. A pair
attack needs two configurations' models at once, so it has its own registry here (PAIR_ATTACKS, names
starting with 'pair_'), run by the per-example stage (analysis/stage.py) on each pair of configurations of a
study, against the one-model attack it extends (`single`) on each model alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.stats import norm

from artifacts.rundir import same_membership
from mia.attacks import gaussian_fit, per_model, per_example, phi
from mia.shadows import AttackInput, AttackOutput, AttackSettings, balanced_shadows, require_shadows
from utils.errors import UsageError


@dataclass
class PairInput:
    """The same target index and shadow rows in two configurations: a.shadow_keep must equal b.shadow_keep
    (model i of both trained on the same subset); the target's own membership is in neither."""
    a: AttackInput
    b: AttackInput

    def __post_init__(self):
        if not same_membership(self.a.shadow_keep, self.a.labels, self.b.shadow_keep, self.b.labels):
            raise UsageError("a pair attack needs the same shadows' subsets and pool in both configurations "
                             "(one keep matrix): these differ")


def _pair_phis(inp: PairInput) -> tuple[np.ndarray, np.ndarray]:
    """phi of the shadows [S, N, Q, 2] and of the target [N, Q, 2]: coordinate 0 model A, 1 model B."""
    s = np.stack([per_model(phi, x.shadow_logits, x.labels) for x in (inp.a, inp.b)], axis=-1)
    t = np.stack([per_example(phi, x.target_logits, x.labels) for x in (inp.a, inp.b)], axis=-1)
    return s, t


class Fit2:
    """Per example and query: the median of each coordinate (LiRA's centre) and the 2x2 covariance
    (around the mean, ddof 0 as mia.attacks.gaussian_fit's variance) over the k selected shadows."""

    def __init__(self, phi_s: np.ndarray, sel: np.ndarray, k: int):
        self.k = k
        self.mu = np.stack([gaussian_fit(phi_s[..., j], sel, k).mu for j in range(2)], axis=-1)  # [N, Q, 2]
        w = sel[:, :, None, None].astype(np.float64)
        mean = (w * phi_s).sum(0) / k
        d = np.where(sel[:, :, None, None], phi_s - mean, 0.0)
        self.cov = np.einsum("snqi,snqj->nqij", d, d) / k  # [N, Q, 2, 2]


def _pooled_cov(phi_s: np.ndarray, fits: list[Fit2]) -> np.ndarray:
    """Fixed covariance: one 2x2 for every example and both Gaussians, the within-example covariance pooled
    over the fitted groups (LiRA's global variance in two dimensions); the covariance of all shadow values
    when that is singular (one shadow per group)."""
    cov = sum(f.k * f.cov.mean(axis=(0, 1)) for f in fits) / sum(f.k for f in fits)
    if np.linalg.det(cov) <= 1e-12 * np.trace(cov) ** 2:
        cov = np.cov(phi_s.reshape(-1, 2).T)
    return cov


def _logpdf2(x: np.ndarray, mu: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(x; mu, cov) for 2-vectors on the last axis (cov [..., 2, 2], broadcast), with a relative ridge
    so that a degenerate per-example covariance stays finite (as LiRA's + 1e-30 on sigma)."""
    ridge = 1e-9 * (cov[..., 0, 0] + cov[..., 1, 1]) + 1e-30
    a, b, c, d = cov[..., 0, 0] + ridge, cov[..., 0, 1], cov[..., 1, 0], cov[..., 1, 1] + ridge
    det = a * d - b * c
    u, v = x[..., 0] - mu[..., 0], x[..., 1] - mu[..., 1]
    maha = (d * u * u - (b + c) * u * v + a * v * v) / det
    return -0.5 * maha - 0.5 * np.log(det) - np.log(2 * np.pi)


def pair_lira_online(inp: PairInput, st: AttackSettings) -> AttackOutput:
    """log N2(phi; mu_in, C_in) - log N2(phi; mu_out, C_out) of the target pair, averaged over queries;
    per-example covariances from lira_fixed_variance_below shadows on, one pooled covariance below."""
    require_shadows(inp.a, "the pair LiRA", need_in=True)
    phi_s, phi_t = _pair_phis(inp)
    sel_in, sel_out, k_in, k_out = balanced_shadows(inp.a.shadow_keep, st.seed)
    f_in, f_out = Fit2(phi_s, sel_in, k_in), Fit2(phi_s, sel_out, k_out)
    fixed = inp.a.num_shadows < st.lira_fixed_variance_below
    c_in, c_out = (_pooled_cov(phi_s, [f_in, f_out]),) * 2 if fixed else (f_in.cov, f_out.cov)
    score = _logpdf2(phi_t, f_in.mu, c_in) - _logpdf2(phi_t, f_out.mu, c_out)
    return AttackOutput(score.mean(axis=1), info={"fixed_variance": fixed, "shadows_in": k_in, "shadows_out": k_out})


def pair_lira_offline(inp: PairInput, st: AttackSettings) -> AttackOutput:
    """The one-sided test in two dimensions: with OUT Gaussians only, the ideal test against a shift of the
    mean by delta is linear, z = w.(phi - mu_out) / sqrt(w' C w), w = C^-1 delta; score = log Pr[Z <= z]
    (lira_offline's score when B is dropped). delta, the direction a member moves, is ONE vector for the
    whole pool: the mean over examples of the IN - OUT shadow gap (the attacker knows each shadow's subset);
    per example only OUT shadows are used. A model whose phi carries no membership gets weight ~0."""
    require_shadows(inp.a, "the offline pair LiRA", need_in=True)
    phi_s, phi_t = _pair_phis(inp)
    sel_in, sel_out, k_in, k_out = balanced_shadows(inp.a.shadow_keep, st.seed)
    f_in, f_out = Fit2(phi_s, sel_in, k_in), Fit2(phi_s, sel_out, k_out)
    delta = (f_in.mu - f_out.mu).mean(axis=(0, 1))  # [2]
    fixed = inp.a.num_shadows < st.lira_fixed_variance_below
    cov = _pooled_cov(phi_s, [f_out]) if fixed else f_out.cov
    cov = np.broadcast_to(cov, f_out.mu.shape + (2,))
    w = np.linalg.solve(cov + 1e-12 * np.eye(2), np.broadcast_to(delta, f_out.mu.shape)[..., None])[..., 0]
    scale = np.sqrt(np.einsum("...i,...ij,...j->...", w, cov, w)) + 1e-30
    z = np.einsum("...i,...i->...", w, phi_t - f_out.mu) / scale
    return AttackOutput(norm.logcdf(z).mean(axis=1), info={"fixed_variance": fixed, "shadows_out": k_out,
                                                            "direction": delta.tolist()})


@dataclass(frozen=True)
class PairAttackSpec:
    fn: Callable[[PairInput, AttackSettings], AttackOutput]
    single: str        # the mia.attacks.ATTACKS entry it extends, run on each model alone for the comparison
    description: str


# Registry: pair attack key -> spec. Every key starts with 'pair_' (a score of two models, never of one).
PAIR_ATTACKS: dict[str, PairAttackSpec] = {
    "pair_lira": PairAttackSpec(pair_lira_online, "lira", "LiRA online on both models' phi (2-D Gaussians)"),
    "pair_lira_offline": PairAttackSpec(pair_lira_offline, "lira_offline",
                                        "offline LiRA on both models' phi (one-sided, 2-D)"),
}
