"""Label smoothing (Szegedy et al., CVPR 2016), the one-line baseline among RelaxLoss's defenses: the
cross-entropy against (1 - eps) one-hot + eps uniform, so no training example is fitted to probability 1."""
from __future__ import annotations

import torch

from defenses.base import cross_entropy


def label_smoothing_loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int, eps: float) -> torch.Tensor:
    return cross_entropy(logits, labels, label_smoothing=eps).mean(0)
