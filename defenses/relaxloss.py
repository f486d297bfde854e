"""RelaxLoss (Chen, Yu & Fritz, ICLR 2022; code DingfanChen/RelaxLoss, source/cifar/defense/relaxloss.py):
keep each model's mean training loss near a target level alpha instead of driving it to zero, so members'
losses look like non-members'. Their rule, per batch, with L = mean CE and epochs counted from 0:

    even epochs:  |L - alpha|          (descent above alpha, gradient ascent below it)
    odd epochs:   L                    when L > alpha
                  mean((1 - correct) * CE(z, soft) - CE(z, y))   otherwise (posterior flattening)

with soft labels p_y' = min(p_y, upper) on the true class and (1 - p_y') / (C - 1) on every other class,
from the model's own softmax (not detached, as in their code), and `correct` = argmax z == y. Each model
of a pack follows the rule on its own L.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from defenses.base import cross_entropy


def relaxloss_loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int, alpha: float, upper: float) -> torch.Tensor:
    ce_full = cross_entropy(logits, labels)  # [B, K]
    ce = ce_full.mean(0)
    if epoch % 2 == 0:
        return (ce - alpha).abs()
    num_classes = logits.shape[-1]
    log_p = F.log_softmax(logits, -1)
    p_true = log_p.exp().gather(-1, labels[..., None])[..., 0].clamp(0.0, upper)  # [B, K]
    onehot = F.one_hot(labels, num_classes).to(logits.dtype)
    soft = onehot * p_true[..., None] + (1 - onehot) * ((1 - p_true) / (num_classes - 1))[..., None]
    correct = (logits.argmax(-1) == labels).to(logits.dtype)
    flatten = ((1 - correct) * -(soft * log_p).sum(-1) - ce_full).mean(0)
    return torch.where(ce > alpha, ce, flatten)
