"""Pair-based posterior balancing (Yuan & Zhang, USENIX Security 2022; code Machine-Learning-Security-Lab/
mia_prune, base_model.train_defend_ppb): cross-entropy plus lambda times the KL divergence between the
posteriors of the two halves of the batch, each example's logits sorted in descending order first, so
the penalty pulls every example's confidence profile (top-1, top-2, ...) towards the others', whatever
its class: members' sharper posteriors are what a membership attack reads.

    loss = CE + lambda * KL(softmax(sort(z[B/2:])) || softmax(sort(z[:B/2]))),
    computed as F.kl_div(log_softmax(first half), softmax(second half), reduction="batchmean")

With an odd batch the last example is left out of the KL term, as in their code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from defenses.base import cross_entropy


def ppb_loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int, weight: float) -> torch.Tensor:
    ranked = logits.sort(-1, descending=True).values  # [B, K, C]; their torch.topk over all classes
    half = len(labels) // 2
    ce = cross_entropy(logits, labels).mean(0)
    if half == 0:
        return ce
    kl = F.kl_div(F.log_softmax(ranked[:half], -1), F.softmax(ranked[half:2 * half], -1), reduction="none")
    return ce + weight * kl.sum(-1).sum(0) / half  # batchmean per model: summed over classes, / half
