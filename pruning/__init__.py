"""Global magnitude pruning of the prunable weights: every Conv2d and every Linear but the classifier
(pruning/masks.py; docs/pruning.md: methods, schedule, papers).

Every method computes the forward pass with w * m, m a global magnitude mask, and differs in when the
mask is made and what the gradient and the mask may do (pruning/methods.py):
static: one-shot pruning at initialisation, before the first step, to exactly the target sparsity; the
        mask is fixed for the run, the gradient masked and pruned weights re-zeroed after each step.
gmp:    gradual magnitude pruning (Zhu & Gupta 2017): the cubic schedule to the target epoch, masks
        refreshed every prune_freq iterations from the live weights; a pruned weight never returns.
dpf:    Dynamic Pruning with Feedback (Lin et al., ICLR 2020): the same schedule, but the gradient taken
        at w * m updates the dense w unmasked (straight-through), so pruned weights keep moving, and
        masks recomputed from the dense |w| let them come back (logged as reactivations); from the
        freeze epoch on the mask is fixed, the gradient masked and the dense values at pruned positions
        dropped.
Saved models are exactly sparse: pruned weights stored as zeros, masks beside them.
"""
from pruning.masks import global_magnitude_masks, measure_sparsity, prunable_parameters, prune_lowest
from pruning.methods import PRUNING_METHODS, MethodSpec, method_revision
from pruning.pruner import Pruner, build_pruner
from pruning.schedule import scheduled_sparsity

__all__ = ["PRUNING_METHODS", "MethodSpec", "Pruner", "build_pruner", "global_magnitude_masks",
           "measure_sparsity", "method_revision", "prunable_parameters", "prune_lowest", "scheduled_sparsity"]
