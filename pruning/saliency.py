"""Pruning at initialisation by a saliency that runs the network: SNIP and SynFlow (docs/pruning.md).

Each scorer returns keep-masks (bool, True = kept) over the prunable weights (pruning/masks.py), pruning exactly
round(s x total) of them with one global threshold (prune_lowest: ties in index order). The model is left as it
was: its weights, BatchNorm statistics and train/eval mode are untouched (the Pruner then applies the masks).

snip     Lee, Ajanthan & Torr, ICLR 2019: connection sensitivity |dL/dc| at c = 1 for a mask c on the weights,
         i.e. |w * dL/dw|. As ganguli-lab/Synaptic-Flow `Pruners/pruners.py` (SNIP) with `prune.py` (prune_loop):
         the network in eval mode (its default, --prune-train-mode False: BatchNorm uses its running statistics, so
         scoring does not move them), the gradients of the mean cross-entropy of each mini-batch summed over the
         batches, then |w * sum g|. Their normalisation by the sum of scores does not change the ranking: left out.
synflow  Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020: data-free. Every parameter and buffer replaced by its absolute
         value (Synaptic-Flow's linearize: the whole state_dict, BatchNorm running statistics included), eval mode (the
         same prune_loop default), R = sum of the outputs for one all-ones input, score |w * dR/dw|; n rounds, round r
         keeping the fraction (1 - s)^(r / n) of the weights (their 'exponential' schedule), the masked network's
         scores each round. Computed in float64 on a functional copy (torch.func.functional_call), the model's own
         tensors untouched: the product of |w| over a deep network's layers under- or overflows float32 (Synaptic-Flow
         has `model.double()` commented out and scores in the model's precision). Pruned weights score -1, so the mask
         only shrinks from round to round (their `score <= threshold` could trade a pruned weight for a kept one of
         score 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from pruning.masks import prunable_parameters, prune_lowest


def _n_prune(sparsity: float, total: int) -> int:
    return int(round(sparsity * total))


def snip_masks(model: nn.Module, sparsity: float, batches: Iterable, batches_used: int = 1, **_) -> list[torch.Tensor]:
    """SNIP keep-masks from the first `batches_used` (x, y) of `batches` (the model's own training images)."""
    named = prunable_parameters(model)
    weights = [w for _, w in named]
    was_training = model.training
    model.eval()
    total = [torch.zeros_like(w) for w in weights]
    try:
        for b, (x, y) in enumerate(batches):
            if b == batches_used:
                break
            dtype = weights[0].dtype
            loss = F.cross_entropy(model(x.to(dtype)).float(), y)
            for t, g in zip(total, torch.autograd.grad(loss, weights)):
                t.add_(g)
    finally:
        model.train(was_training)
    scores = [(w.detach().double() * t.double()).abs() for w, t in zip(weights, total)]
    return prune_lowest(scores, _n_prune(sparsity, sum(s.numel() for s in scores)))


def synflow_masks(model: nn.Module, sparsity: float, batches: Iterable, rounds: int = 100, **_) -> list[torch.Tensor]:
    """SynFlow keep-masks after `rounds` rounds; only the shape of the first batch's images is read."""
    x, _ = next(iter(batches))
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    names = [n for n, _ in prunable_parameters(model)]
    state = {k: v.detach().abs().double() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    base = {n: state[n] for n in names}
    total = sum(w.numel() for w in base.values())
    masks = [torch.ones_like(w, dtype=torch.bool) for w in base.values()]
    was_training = model.training
    model.eval()
    try:
        for r in range(1, rounds + 1):
            live = {n: (w * m).requires_grad_(True) for (n, w), m in zip(base.items(), masks)}
            out = torch.func.functional_call(model, {**state, **live}, (ones,))
            grads = torch.autograd.grad(out.sum(), list(live.values()))
            scores = [torch.where(m, (g * w).abs(), -1.0) for g, w, m in zip(grads, live.values(), masks)]
            s_r = sparsity if r == rounds else 1.0 - (1.0 - sparsity) ** (r / rounds)  # the last one exactly s
            masks = prune_lowest(scores, _n_prune(s_r, total))
    finally:
        model.train(was_training)
    return masks


@dataclass(frozen=True)
class Scorer:
    masks: Callable[..., list[torch.Tensor]]  # (model, sparsity, batches, **options) -> keep-masks, prunable order
    reads_data: bool                           # its masks depend on the model's training examples
    options: dict                              # config field -> keyword of `masks`


# Registry: MethodSpec.scorer -> how the mask is made at initialisation (Pruner.at_init)
SCORERS: dict[str, Scorer] = {
    "snip": Scorer(snip_masks, reads_data=True, options={"snip_batches": "batches_used"}),
    "synflow": Scorer(synflow_masks, reads_data=False, options={"synflow_rounds": "rounds"}),
}
