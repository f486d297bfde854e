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
    """One parameter of a defense: an ExperimentConfig field named `<defense>_<name>`, left None unless the
    defense is asked for (a parameter given without its defense is refused: configs/config.py)."""
    field: str
    default: float
    valid: Callable[[float], bool]
    rule: str  # what `valid` accepts, for the one-line message ("> 0", "in [0, 1)")


@dataclass(frozen=True)
class DefenseSpec:
    loss: Callable[..., torch.Tensor]  # (logits [B, K, C], labels [B, K], epoch, **params) -> loss [K]
    description: str
    source: str = ""                   # paper and public code it follows (docs/defenses.md)
    params: tuple[Param, ...] = ()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, **kw) -> torch.Tensor:
    """Per-example cross-entropy [B, K] of logits [B, K, C] against labels [B, K] (kw: F.cross_entropy's)."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none", **kw)


def undefended(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
    """The plain training loss: each model's mean cross-entropy over its batch [K]."""
    return cross_entropy(logits, labels).mean(0)
