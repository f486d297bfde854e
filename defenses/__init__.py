"""Registry of defenses against membership inference (docs/defenses.md: formulas, papers, code).

A defense is a training loss (defenses/base.py) that composes with every pruning method: the pruner's
masks and hooks are untouched, only the loss whose gradient they mask changes. Its parameters are
ExperimentConfig fields `<defense>_<param>`, None unless that defense is asked for; resolved() fills their
defaults from here and validate() checks them here, so a new defense is one file, one entry and its
config fields. The shadows of a defended configuration train with the same defense (the adaptive attacker).
"""
from __future__ import annotations

import functools

from defenses.base import DefenseSpec, Param, undefended
from defenses.label_smoothing import label_smoothing_loss
from defenses.ppb import ppb_loss
from defenses.relaxloss import relaxloss_loss
from utils.errors import UsageError

NONE = "none"

DEFENSES: dict[str, DefenseSpec] = {
    NONE: DefenseSpec(undefended, "no defense: mean cross-entropy"),
    "ppb": DefenseSpec(ppb_loss, "pair-based posterior balancing: CE + lambda * KL between the sorted posteriors "
                                 "of the batch's two halves",
                       "Yuan & Zhang, USENIX Security 2022; Machine-Learning-Security-Lab/mia_prune",
                       (Param("ppb_weight", 4.0, lambda v: v >= 0, ">= 0"),)),
    "relaxloss": DefenseSpec(relaxloss_loss, "RelaxLoss: the loss held near alpha (ascent below it, posterior "
                                             "flattening of correctly classified examples)",
                             "Chen, Yu & Fritz, ICLR 2022; DingfanChen/RelaxLoss",
                             (Param("relaxloss_alpha", 1.0, lambda v: v > 0, "> 0"),
                              Param("relaxloss_upper", 1.0, lambda v: 0 < v <= 1, "in (0, 1]"))),
    "label_smoothing": DefenseSpec(label_smoothing_loss, "cross-entropy against labels smoothed towards uniform",
                                   "Szegedy et al., CVPR 2016 (a RelaxLoss baseline)",
                                   (Param("label_smoothing_eps", 0.1, lambda v: 0 <= v < 1, "in [0, 1)"),)),
}


def param_fields() -> list[str]:
    """Every defense parameter's config field, in registry order."""
    return [p.field for spec in DEFENSES.values() for p in spec.params]


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _arg(defense: str, p: Param) -> str:
    """The loss function's keyword for p: the field without its defense's prefix (ppb_weight -> weight)."""
    return p.field[len(defense) + 1:]


def with_defaults(cfg):
    """cfg with its own defense's unset parameters at their defaults (the others stay None)."""
    import dataclasses

    spec = DEFENSES.get(cfg.defense)
    if spec is None:  # named by check_defense()
        return cfg
    return dataclasses.replace(cfg, **{p.field: p.default for p in spec.params if getattr(cfg, p.field) is None})


def check_defense(cfg) -> None:
    """A known defense, its parameters in range, no parameter of another defense (it would be silently ignored)."""
    if cfg.defense not in DEFENSES:
        raise UsageError(f"unknown --defense '{cfg.defense}'; valid: {', '.join(DEFENSES)}")
    for name, spec in DEFENSES.items():
        for p in spec.params:
            v = getattr(cfg, p.field)
            if name != cfg.defense and v is not None:
                raise UsageError(f"{_flag(p.field)} applies to --defense {name} only, not --defense {cfg.defense}")
            if name == cfg.defense and v is not None and not p.valid(v):
                raise UsageError(f"{_flag(p.field)} must be {p.rule}, got {v}")


def build_loss(cfg):
    """The training loss of cfg's defense: (logits [B, K, C], labels [B, K], epoch) -> loss per model [K]."""
    cfg = with_defaults(cfg)
    spec = DEFENSES[cfg.defense]
    return functools.partial(spec.loss, **{_arg(cfg.defense, p): getattr(cfg, p.field) for p in spec.params})


__all__ = ["DEFENSES", "NONE", "DefenseSpec", "Param", "build_loss", "check_defense", "param_fields", "with_defaults"]
