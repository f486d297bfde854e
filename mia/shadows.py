"""What every attack shares: its input (the target's and shadows' signals, never the target's own
membership), its settings, its output, the seeded random streams and the balanced choice of shadow rows
(docs/attacks.md, "Inputs and conventions"). The statistical attacks (mia/attacks.py) and the learned
ones (mia/nn_attacks.py) both build on this module, and the registry in attacks.py imports both.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np

from utils.errors import UsageError


@dataclass
class AttackInput:
    target_logits: np.ndarray               # [N, Q, C]
    shadow_logits: Sequence[np.ndarray]     # S arrays [N, Q, C] (an [S, N, Q, C] array or a ModelStack)
    shadow_keep: np.ndarray                 # [S, N] bool: shadow s trained on example n
    labels: np.ndarray                      # [N] int
    target_sens: np.ndarray | None = None   # [N, C] SAMIA sensitivity
    shadow_sens: Sequence[np.ndarray] | None = None  # S arrays [N, C]

    @property
    def num_shadows(self) -> int:
        return len(self.shadow_keep)

    @property
    def num_classes(self) -> int:
        return self.target_logits.shape[-1]


@dataclass
class AttackSettings:
    """Every knob of every attack; recorded with the results."""
    seed: int = 0
    device: str = "cpu"
    lira_fixed_variance_below: int = 64   # LiRA: one global variance when there are fewer shadows (Carlini et al.)
    rmia_a: float = 0.3                   # RMIA offline: P(x) = ((1 + a) P_out(x) + (1 - a)) / 2
    rmia_gamma: float = 1.0               # RMIA: likelihood-ratio threshold against the population
    nn_optimizer: str = "adam"            # "adam" or "sgd" (mia_prune: momentum 0.9, wd 5e-4, lr x0.1 at epochs 50, 75)
    nn_lr: float = 1e-3
    nn_momentum: float = 0.9              # SGD only
    nn_weight_decay: float = 5e-4         # SGD only (Adam: none)
    nn_batch_size: int = 128
    nn_max_epochs: int = 100
    nn_patience: int = 5                  # early stopping: epochs without a better validation loss
    nn_max_train_rows: int = 60_000       # shadow rows (balanced IN/OUT) an attack model trains on
    nn_min_class_rows: int = 2_000        # per-class models (Shokri): at least this many rows each
    nn_folds: int = 2                     # cross-fitting: each example is scored by a model trained on the other folds
    nn_val_fraction: float = 0.15         # of a model's training examples, held out: their rows drive its early stopping
    nn_min_val_rows: int = 1_000          # at least this many early-stopping rows a model, threshold rows a class (Shokri)
    nn_max_val_rows: int = 10_000         # cap on those rows (per model; threshold: over the folds), balanced IN/OUT
    samia_max_train_rows: int = 30_000    # the transformer costs ~10x an MLP per row
    samia_max_epochs: int = 30
    nn_cpu_threads: int = 1               # torch threads on CPU: small models lose with more (and the cores are shared)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AttackOutput:
    scores: np.ndarray                   # [N] float64, higher = member
    threshold: float | None = None       # decision threshold from the attack's own shadow calibration
    calibration: str = ""                # how that threshold was calibrated
    info: dict = field(default_factory=dict)


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """A random stream for one purpose. Fragile spot: the keep matrix is drawn from
    default_rng(mia_seed); an attack drawing from default_rng(seed) with the same number would reuse
    that very noise and correlate its choices with membership (seen: 6-point usage bias)."""
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def target_settings(st: AttackSettings, model_index: int) -> AttackSettings:
    """The settings an attack runs with against target `model_index`: its own seed, derived from the
    study's (st.seed) and the model index. Why: with one seed for every target, the targets of a
    configuration fitted their attack models from the same initialisation, rows and folds on nearly the
    same shadows, so the attack's own noise moved every target alike and the spread over targets (the
    interval's between-target part) missed it (the A/A check: learned attacks' squared A/A differences
    1.4-1.9x the variance their intervals estimated). Model i of every configuration gets the same seed
    (common random numbers for the paired comparisons), whichever --targets are chosen."""
    seed = int(np.random.SeedSequence([st.seed, zlib.crc32(b"attack target"), model_index]).generate_state(1)[0])
    return replace(st, seed=seed)


def require_shadows(inp: AttackInput, title: str, need_in: bool) -> None:
    """Per-example statistics need OUT (and IN) shadows for every example. With the balanced keep
    matrix that takes 3 shadows when IN ones are needed and 2 otherwise."""
    n_in = inp.shadow_keep.sum(0)
    lacking = (n_in == inp.num_shadows) | ((n_in == 0) if need_in else False)
    if lacking.any():
        what = "IN for at least one shadow model and OUT for another" if need_in else "OUT for at least one shadow model"
        raise UsageError(f"{title} needs every example {what}: {int(lacking.sum())} of {len(n_in)} examples lack one "
                         f"among {inp.num_shadows} shadow(s); train with --num-shadows N (N >= {3 if need_in else 2})")


def balanced_shadows(keep: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int, int]:
    """IN and OUT masks [S, N]: for every example, k_in of its IN and k_out of its OUT shadows, drawn
    at random (seeded), k = the smallest counts over examples. Fragile spot: under the balanced keep
    matrix the target's members have one IN shadow fewer than its non-members, so raw shadow counts
    reveal the target's membership to anything pooling shadow rows (Gaussian fits, per-class
    thresholds, attack-model training sets). Equal counts remove that; drawing them at random (not
    the first k in shadow order, as the LiRA reference code does) makes the chance that a given
    shadow is used independent of the target's membership, so one odd shadow cannot bias scores."""
    u = rng_for(seed, "balanced_shadows").random((2,) + keep.shape)

    def pick(sel, u):
        k = int(sel.sum(0).min())
        pri = np.where(sel, u, np.inf)
        kth = np.sort(pri, axis=0)[k - 1] if k else np.full(sel.shape[1], -np.inf)
        return sel & (pri <= kth), k

    (sel_in, k_in), (sel_out, k_out) = pick(keep, u[0]), pick(~keep, u[1])
    return sel_in, sel_out, k_in, k_out
