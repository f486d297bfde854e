"""Masks over the prunable set: every Conv2d weight (first conv and 1x1 shortcut convs included).
BatchNorm and the final Linear stay dense, as in the DPF re-implementations (REFERENCE.md section 6).
"""
from __future__ import annotations

import torch
import torch.nn as nn


def prunable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every Conv2d, in module order; names as in model.state_dict()."""
    return [(f"{name}.weight" if name else "weight", m.weight) for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d)]


def scheduled_sparsity(it: int, s_f: float, target_iter: int) -> float:
    """Zhu & Gupta (2017) cubic schedule: s(t) = s_f * (1 - (1 - t/T)^3) for t < T, then s_f.
    T = 0 gives s_f at once: one-shot pruning at initialisation."""
    if it >= target_iter:
        return s_f
    return s_f * (1.0 - (1.0 - it / target_iter) ** 3)


def global_magnitude_masks(scores: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Keep the (1 - sparsity) largest scores across all tensors: exactly round(sparsity * total)
    entries are pruned, ties broken by topk. topk works for any size (torch.quantile fails above
    2^24 elements)."""
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores])
    n_prune = int(round(sparsity * flat.numel()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if n_prune < flat.numel():
        keep[torch.topk(flat, flat.numel() - n_prune, sorted=False).indices] = True
    return [m.view_as(s) for m, s in zip(keep.split([s.numel() for s in scores]), scores)]


@torch.no_grad()
def measure_sparsity(model: nn.Module) -> dict:
    """Fraction of exact zeros over the prunable set ("sparsity"), over all parameters, and per layer."""
    per_layer, zeros, total = {}, 0, 0
    for name, w in prunable_parameters(model):
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    all_zeros = sum(int((p == 0).sum()) for p in model.parameters())
    all_total = sum(p.numel() for p in model.parameters())
    return {"sparsity": zeros / max(total, 1), "sparsity_all_params": all_zeros / max(all_total, 1),
            "num_prunable": total, "num_nonzero": all_total - all_zeros, "layer_sparsity": per_layer}
