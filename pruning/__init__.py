"""Pruning of every Conv2d weight by global magnitude along the cubic schedule (REFERENCE.md section 6).

static: forward with w * m, gradient masked, a pruned weight never returns (the mask only shrinks);
        --target-epoch 0 is one-shot pruning at initialisation.
dpf:    Dynamic Pruning with Feedback (Lin et al., ICLR 2020): forward with w * m, the gradient taken at
        the masked weights updates the dense w unmasked (straight-through), masks are recomputed from |w|
        so pruned weights can return; from --freeze-epoch on the mask is fixed and the gradient masked.
Saved models are exactly sparse: pruned weights are stored as zeros, masks beside them.
"""
from pruning.masks import global_magnitude_masks, measure_sparsity, prunable_parameters, scheduled_sparsity
from pruning.pruner import PRUNING_METHODS, Pruner, build_pruner

__all__ = ["PRUNING_METHODS", "Pruner", "build_pruner", "global_magnitude_masks", "measure_sparsity",
           "prunable_parameters", "scheduled_sparsity"]
