"""Global magnitude pruning of every Conv2d weight along the cubic schedule (REFERENCE.md section 6).

Both methods compute the forward pass with w * m, m a global magnitude mask refreshed every
prune_freq iterations until the target epoch, and differ in what the gradient and the mask may do:
static: the gradient reaching w is masked and a pruned weight never returns (the mask only shrinks);
        target epoch 0 is one-shot pruning at initialisation.
dpf:    Dynamic Pruning with Feedback (Lin et al., ICLR 2020): the gradient taken at w * m updates the
        dense w unmasked (straight-through), so pruned weights keep moving, and masks recomputed from
        the dense |w| let them come back (logged as reactivations); from the freeze epoch on the mask is
        fixed, the gradient masked and the dense values at pruned positions dropped.
Saved models are exactly sparse: pruned weights stored as zeros, masks beside them.
"""
from pruning.masks import global_magnitude_masks, measure_sparsity, prunable_parameters, prune_lowest
from pruning.methods import PRUNING_METHODS, MethodSpec
from pruning.pruner import Pruner, build_pruner
from pruning.schedule import scheduled_sparsity

__all__ = ["PRUNING_METHODS", "MethodSpec", "Pruner", "build_pruner", "global_magnitude_masks",
           "measure_sparsity", "prunable_parameters", "prune_lowest", "scheduled_sparsity"]
