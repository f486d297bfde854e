"""Registry of defenses against membership inference (docs/defenses.md: formulas, papers, code).

A defense is a training loss (defenses/base.py) that composes with every pruning method: the pruner's
masks and hooks are untouched, only the loss whose gradient they mask changes. One that changes more says
so with the spec's hooks (dp: a GroupNorm model, the DP-SGD step, epsilon in the summary). Its parameters are
ExperimentConfig fields `<defense>_<param>`, None unless that defense is asked for; resolved() fills their
defaults from here and validate() checks them here, so a new defense is one file, one entry and its
config fields. The shadows of a defended configuration train with the same defense (the adaptive attacker).
"""
from __future__ import annotations

import functools

from defenses import dp
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
    "dp": DefenseSpec(undefended, "DP-SGD: per-example clipping and Gaussian noise, epsilon from the RDP accountant; "
                                  "BatchNorm replaced by GroupNorm", "Abadi et al., CCS 2016; pytorch/opacus",
                      (Param("dp_noise", 1.0, lambda v: v >= 0, ">= 0", to_loss=False),
                       Param("dp_clip", 1.0, lambda v: v > 0, "> 0", to_loss=False),
                       Param("dp_delta", None, lambda v: 0 < v < 1, "in (0, 1)", to_loss=False)),
                      check=dp.check, model=dp.private_model, loop=dp.make_private,
                      summary=dp.record, per_example=True),
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
    fixed = {"pack": cfg.pack or 1, "amp": False, "channels_last": False} if spec.per_example else {}
    return dataclasses.replace(cfg, **{p.field: p.default for p in spec.params if getattr(cfg, p.field) is None}, **fixed)


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
    spec = DEFENSES[cfg.defense]
    if spec.per_example and cfg.pack not in (None, 1):
        raise UsageError(f"--defense {cfg.defense} trains one model at a time: --pack must be 1, got {cfg.pack}")
    if spec.check:
        spec.check(cfg)


def build_loss(cfg):
    """The training loss of cfg's defense: (logits [B, K, C], labels [B, K], epoch) -> loss per model [K]."""
    cfg = with_defaults(cfg)
    spec = DEFENSES[cfg.defense]
    return functools.partial(spec.loss, **{_arg(cfg.defense, p): getattr(cfg, p.field) for p in spec.params if p.to_loss})


def defended_model(cfg, model):
    """The model cfg's defense trains (and load_model rebuilds): the model itself, or dp's GroupNorm version.
    A config recorded before defenses existed reads as undefended (ExperimentConfig.from_dict)."""
    spec = DEFENSES[cfg.defense]
    return spec.model(model) if spec.model else model


def prepare_loop(trainer) -> None:
    """Let cfg's defense change the training step (dp: DP-SGD); nothing for a loss-only defense."""
    spec = DEFENSES[trainer.cfg.defense]
    if spec.loop:
        spec.loop(trainer)


def defense_summary(cfg, num_train: int, batch: int, iters: int) -> dict:
    """Fields the defense adds to each model's summary (dp: epsilon at delta); cfg is the loop's config."""
    spec = DEFENSES[cfg.defense]
    return spec.summary(cfg, num_train, batch, iters, cfg.epochs) if spec.summary else {}


__all__ = ["DEFENSES", "NONE", "DefenseSpec", "Param", "build_loss", "check_defense", "defended_model", "defense_summary",
           "param_fields", "prepare_loop", "with_defaults"]
