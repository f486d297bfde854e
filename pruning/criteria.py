"""What a one-shot method prunes: criterion name -> keep-masks over the model's parameters (docs/pruning.md).

Unstructured ("magnitude"): the prunable weights with the smallest |w|, over the whole prunable set
(scope global: one threshold, this project's static) or in each layer separately (scope layer: every
layer at the sparsity, mia_prune's l1unstructure = NNI's LevelPruner).
Structured: whole output channels of convolutions. A pruned channel outputs exactly zero for any input:
its filter (and bias) is masked, and so are the scale and shift (gamma, beta) of the BatchNorm that
normalises that convolution's output, found by tracing the model (torch.fx). Its running statistics then
see only zeros, and (0 - 0) / sqrt(0 + eps) * 0 + 0 = 0 in eval mode as in training.
  filter_l1 / filter_l2: per convolution, the round(s x filters) filters of smallest L1 / L2 norm
                         (mia_prune's l1structure / l2structure = NNI's L1/L2FilterPruner);
  bn_gamma:              network slimming (Liu et al. ICCV 2017; mia_prune's slim = NNI's SlimPruner): the
                         round(s x channels) channels of smallest |gamma| over every BatchNorm that follows a
                         convolution, one global threshold.
Depthwise convolutions are pruned like any other (filter c is output channel c); a concatenation (DenseNet)
needs nothing special, since the pruned channel is zero wherever it goes. A layer would lose every channel:
refused with one line naming it. Ties are broken in index order (prune_lowest), so counts are exact.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from pruning.masks import prunable_parameters, prune_lowest
from utils.errors import UsageError

Masks = dict[str, torch.Tensor]  # parameter name (a state_dict key) -> bool keep-mask of its shape
SCOPES = ("global", "layer")


def magnitude(model: nn.Module, sparsity: float, scope: str = "global") -> Masks:
    named = prunable_parameters(model)
    scores = [w.detach().abs() for _, w in named]
    if scope == "global":
        masks = prune_lowest(scores, int(round(sparsity * sum(s.numel() for s in scores))))
    else:
        masks = [prune_lowest([s], int(round(sparsity * s.numel())))[0] for s in scores]
    return {n: m for (n, _), m in zip(named, masks)}


def convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not found:
        raise UsageError(f"structured pruning removes convolution filters; this {type(model).__name__} has no Conv2d")
    return found


def conv_batchnorms(model: nn.Module) -> dict[str, str]:
    """conv module name -> name of the BatchNorm2d whose input is exactly that convolution's output.
    Traced, not guessed from module order: in a pre-activation block (WideResNet) the BatchNorm after a conv
    in registration order normalises a residual sum, not the conv."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # fx raises many types on untraceable control flow
        raise UsageError(f"structured pruning needs to trace {type(model).__name__} with torch.fx to find each "
                         f"convolution's BatchNorm: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    mods = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(mods.get(node.target), nn.BatchNorm2d):
            src = node.args[0] if node.args else None
            if getattr(src, "op", None) == "call_module" and isinstance(mods.get(src.target), nn.Conv2d):
                pairs[src.target] = node.target
    return pairs


def _name(module: str, param: str) -> str:
    return f"{module}.{param}" if module else param


def channel_masks(model: nn.Module, keep: dict[str, torch.Tensor]) -> Masks:
    """Parameter masks that remove output channels: keep[conv name] = bool [out_channels] -> that conv's
    weight and bias, and its BatchNorm's weight and bias. Every conv gets a weight mask (all True where kept)."""
    mods, bns = dict(model.named_modules()), conv_batchnorms(model)
    masks = {}
    for name, conv in convs(model):
        k = keep.get(name, torch.ones(conv.out_channels, dtype=torch.bool, device=conv.weight.device))
        masks[_name(name, "weight")] = k.view(-1, 1, 1, 1).expand_as(conv.weight).clone()
        if conv.bias is not None:
            masks[_name(name, "bias")] = k.clone()
        bn = mods.get(bns.get(name))
        if bn is not None and bn.affine:
            masks[_name(bns[name], "weight")] = k.clone()
            masks[_name(bns[name], "bias")] = k.clone()
    return masks


def _check_not_emptied(keep: dict[str, torch.Tensor], sparsity: float, what: str) -> None:
    for name, k in keep.items():
        if not k.any():
            raise UsageError(f"--sparsity {sparsity} would remove every {what} of layer {name} ({k.numel()}); "
                             f"use a lower sparsity")


def filter_norm(model: nn.Module, sparsity: float, scope: str = "global", p: int = 1) -> Masks:
    """Per conv: the round(sparsity x out_channels) filters of smallest L_p norm removed (scope: not used)."""
    keep = {}
    for name, conv in convs(model):
        norms = conv.weight.detach().flatten(1).norm(p=p, dim=1)
        keep[name] = prune_lowest([norms], int(round(sparsity * conv.out_channels)))[0]
    _check_not_emptied(keep, sparsity, "filter")
    return channel_masks(model, keep)


def bn_gamma(model: nn.Module, sparsity: float, scope: str = "global") -> Masks:
    """Network slimming: one global threshold on |gamma| over the BatchNorms that follow a convolution."""
    mods, bns = dict(model.named_modules()), conv_batchnorms(model)
    pairs = [(c, mods[b]) for c, b in bns.items() if mods[b].affine]
    if not pairs:
        raise UsageError(f"--prune-method slim ranks BatchNorm scales; no BatchNorm of this {type(model).__name__} "
                         f"follows a convolution")
    gammas = [bn.weight.detach().abs() for _, bn in pairs]
    kept = prune_lowest(gammas, int(round(sparsity * sum(g.numel() for g in gammas))))
    keep = {c: k for (c, _), k in zip(pairs, kept)}
    _check_not_emptied(keep, sparsity, "channel")
    return channel_masks(model, keep)


# Registry: criterion name (MethodSpec.criterion) -> function(model, sparsity, scope) -> masks
CRITERIA: dict[str, Callable[..., Masks]] = {
    "magnitude": magnitude,
    "filter_l1": partial(filter_norm, p=1),
    "filter_l2": partial(filter_norm, p=2),
    "bn_gamma": bn_gamma,
}


@torch.no_grad()
def filter_sparsity(model: nn.Module) -> float | None:
    """Fraction of convolution output filters whose weights are all zero (None without convolutions)."""
    filters = [m.weight.detach().flatten(1) for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not filters:
        return None
    removed = torch.stack([(f == 0).all(1).sum() for f in filters]).sum()
    return int(removed) / sum(f.shape[0] for f in filters)
