"""What a defense is (DefenseSpec) and the per-model cross-entropy every defense starts from.

A defense replaces the training loss, nothing else: it maps one step's logits [B, K, C] (K models of a
pack, each with its own batch of B examples: training/trainer.py), labels [B, K] and the epoch to one
loss per model [K]. Each model's loss reads only its own column, so a pack's models stay independent
(the sum over models backpropagates each model's loss into its own weights alone).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Param:
    """One parameter of a defense, named `name` in its loss function. In the config, the flags and config.json
    it is `<defense>_<name>` (ppb's weight: --ppb-weight, "ppb_weight"), left None unless the defense is asked
    for (a parameter given without its defense is refused: defenses.check_defense); its flag and help text
    are generated from these fields (configs/config.py add_config_args)."""
    name: str
    default: float | None  # None: derived where it is used (dp's delta: from the training-set size)
    valid: Callable[[float], bool]
    rule: str  # what `valid` accepts, for the one-line message and the help ("> 0", "in [0, 1)")
    help: str  # what it is, for --help
    type: type = float  # what the flag parses its value as
    default_help: str = ""  # the default in --help when more than its value (a derivation, a source)
    to_loss: bool = True  # passed to the loss function (dp's parameters act on the optimizer step instead)


@dataclass(frozen=True)
class DefenseSpec:
    loss: Callable[..., torch.Tensor]  # (logits [B, K, C], labels [B, K], epoch, **params) -> loss [K]
    description: str
    source: str = ""                   # paper and public code it follows (docs/defenses.md)
    params: tuple[Param, ...] = ()
    # A defense that changes more than the loss (dp) says so with these hooks; None: not used.
    check: Callable | None = None      # (cfg) -> None, raises UsageError (e.g. a missing package)
    model: Callable | None = None      # (model) -> the model it trains (dp: BatchNorm -> GroupNorm)
    loop: Callable | None = None       # (trainer) -> its step hook (training/hooks.py): changes the step (dp: DP-SGD)
    summary: Callable | None = None    # (cfg, num_train, batch, iters, epochs) -> fields of each model's summary
    per_example: bool = False          # per-example gradients: one model at a time (--pack 1), in fp32 (no
                                       # autocast: the clip bound needs each example's exact norm), contiguous
                                       # (Opacus's per-example conv gradients are wrong for channels_last inputs)


def param(cfg, name: str):
    """The value of cfg's defense's parameter `name` (dp's "delta" is cfg's "dp_delta"); None when unset."""
    return cfg.defense_params.get(f"{cfg.defense}_{name}")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, **kw) -> torch.Tensor:
    """Per-example cross-entropy [B, K] of logits [B, K, C] against labels [B, K] (kw: F.cross_entropy's)."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", **kw)


def undefended(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
    """The plain training loss: each model's mean cross-entropy over its batch [K]."""
    return cross_entropy(logits, labels).mean(0)
