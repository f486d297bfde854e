"""Dynamic sparse training: RigL and SET (docs/pruning.md, "Dynamic sparse training").

Each prunable layer keeps a fixed number of weights for the whole run; the topology changes, the count does not.
Where the papers leave a choice, this follows google-research/rigl (`rigl/sparse_utils.py`,
`rigl/sparse_optimizers_base.py`, `rigl/cifar_resnet/resnet_train_eval.py`):

* Per-layer densities (layer_kept): Erdos-Renyi-Kernel, density proportional to sum(shape) / prod(shape)
  ((n_out + n_in + k_h + k_w) / (n_out n_in k_h k_w) for a convolution), scaled so the kept total is the
  global target; a layer whose density would exceed 1 is made dense and the rest re-scaled, the layers of
  largest raw density first, until none exceeds 1 (get_sparsities_erdos_renyi). `uniform`: every layer at
  the same density. The first layer is dense (rigl's CIFAR ResNet: --prune_first_layer False); it counts in
  the budget here, so --sparsity stays the sparsity of the whole prunable set, exactly: the kept counts are
  integers (floor, then the largest remainders) summing to total - round(s x total).
* Initial masks: random, exactly the layer's count (rigl's get_mask_random), from the pruner's own seeded stream.
* Updates (drop_and_grow) at steps t = 0, dT, 2 dT, ... while t <= T_end = 0.75 x the run's steps (rigl's
  is_mask_update_iter: last update + frequency <= step, first at step 0, end step included): in each layer
  k = floor(f(t) x active) with f(t) = alpha / 2 (1 + cos(pi t / T_end)), alpha = --drop-fraction (0.3,
  tf cosine_decay); the k active weights of smallest |w| are dropped, then k weights grown among the ones
  inactive after the drop (a weight just dropped may come back, keeping its value, as in rigl's
  _get_update_op), by largest |dense gradient| (RigL) or uniform random scores (SET). A new connection
  starts at exactly zero with zero momentum (grow_init 'zeros', reset_momentum).
* RigL's update step replaces the optimizer step (rigl's SparseRigLOptimizer: mask update in the true
  branch, the gradient step in the false one); the gradient is the one of this step's batch at w * m,
  taken for every weight (the parameter holds w * m, so its .grad is the dense gradient). SET updates after
  the optimizer step (SparseSETOptimizer: the step, then the mask update), scoring the stepped weights.
* Ties are broken in index order (prune_lowest), where rigl adds N(0, 1e-5) noise to the drop scores: the
  drop/grow sets are then a deterministic function of the weights, gradients and the seeded stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pruning.masks import prune_lowest
from utils.errors import UsageError

DENSITIES = ("erk", "uniform")
END_FRACTION = 0.75  # updates stop at 75% of training (the RigL paper; rigl's maskupdate_end_step)


def layer_kept(names: list[str], shapes: list[tuple[int, ...]], sparsity: float, density: str = "erk") -> list[int]:
    """Kept weights per layer (the first dense), summing to total - round(sparsity x total)."""
    if density not in DENSITIES:
        raise UsageError(f"unknown --density '{density}'; valid: {', '.join(DENSITIES)}")
    n = [math.prod(s) for s in shapes]
    kept_total = sum(n) - int(round(sparsity * sum(n)))
    raw = [sum(s) / math.prod(s) if density == "erk" else 1.0 for s in shapes]
    dense = {0}
    while True:
        rest = [i for i in range(len(n)) if i not in dense]
        budget = kept_total - sum(n[i] for i in dense)
        if not rest or budget <= 0:
            held = ", ".join(names[i] for i in sorted(dense))
            raise UsageError(f"--sparsity {sparsity} keeps {kept_total} of {sum(n)} weights, but the layers --density "
                             f"{density} keeps dense (the first, and any it would make denser than 1: {held}) hold "
                             f"{sum(n[i] for i in dense)}; lower --sparsity")
        eps = budget / sum(raw[i] * n[i] for i in rest)
        top = max(raw[i] for i in rest)
        if eps * top <= 1:
            break
        dense |= {i for i in rest if raw[i] == top}
    ideal = {i: eps * raw[i] * n[i] for i in rest}
    kept = [n[i] if i in dense else int(math.floor(ideal[i])) for i in range(len(n))]
    extra = budget - sum(kept[i] for i in rest)  # the largest remainders get one more (index order on ties)
    for i in sorted(rest, key=lambda i: (-(ideal[i] - kept[i]), i))[:extra]:
        kept[i] += 1
    empty = [names[i] for i in rest if kept[i] == 0]
    if empty:
        raise UsageError(f"--sparsity {sparsity} with --density {density} leaves layer {empty[0]} no weight; "
                         f"lower --sparsity")
    return kept


def random_masks(shapes: list[tuple[int, ...]], kept: list[int], gen: torch.Generator) -> list[torch.Tensor]:
    """Per layer, exactly kept[i] weights chosen uniformly at random (CPU stream `gen`)."""
    masks = []
    for shape, k in zip(shapes, kept):
        flat = torch.zeros(math.prod(shape), dtype=torch.bool)
        flat[torch.randperm(flat.numel(), generator=gen)[:k]] = True
        masks.append(flat.view(shape))
    return masks


def drop_fraction(it: int, alpha: float, end_iter: int) -> float:
    """f(t) = alpha / 2 (1 + cos(pi t / T_end)), t clipped at T_end (tf cosine_decay)."""
    if end_iter <= 0:
        return float(alpha)
    return alpha * 0.5 * (1.0 + math.cos(math.pi * min(it, end_iter) / end_iter))


@torch.no_grad()
def drop_and_grow(weights: list[torch.Tensor], masks: list[torch.Tensor], grow_scores: list[torch.Tensor],
                  fraction: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(new masks, new connections) per layer: floor(fraction x active) active weights of smallest |w| dropped,
    as many grown among the weights inactive after the drop by largest grow score (>= 0)."""
    new_masks, grown = [], []
    for w, m, g in zip(weights, masks, grow_scores):
        n, active = m.numel(), int(m.sum())
        k = int(active * fraction)
        drop_score = torch.where(m, w.detach().abs(), -1.0)
        after_drop = prune_lowest([drop_score], n - (active - k))[0]  # keeps the active - k largest |w|
        grow_score = torch.where(after_drop, -1.0, g.to(drop_score.dtype))
        regrown = prune_lowest([grow_score], n - k)[0] if k else torch.zeros_like(m)  # keeps the k largest
        new_masks.append(after_drop | regrown)
        grown.append(regrown & ~m)
    return new_masks, grown


def gradient_scores(pruner, gen: torch.Generator) -> list[torch.Tensor]:
    return [g.abs() for g in pruner.slot("grad")]


def random_scores(pruner, gen: torch.Generator) -> list[torch.Tensor]:
    """Uniform [0, 1) scores, drawn on the CPU in float64 layer by layer (the same stream on any device)."""
    return [torch.rand(p.shape, generator=gen, dtype=torch.float64).to(p.device) for p in pruner.params]


@dataclass(frozen=True)
class Grower:
    scores: object         # (pruner, generator) -> grow scores per prunable layer
    replaces_step: bool    # the update runs before the optimizer step and replaces it (RigL), else after it (SET)
    reads_gradient: bool   # it ranks by the raw (unclipped, noiseless) gradient of the training batch


# Registry: MethodSpec.grow -> how weights are grown
GROWERS: dict[str, Grower] = {
    "gradient": Grower(gradient_scores, replaces_step=True, reads_gradient=True),
    "random": Grower(random_scores, replaces_step=False, reads_gradient=False),
}
