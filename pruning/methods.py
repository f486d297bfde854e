"""Registry of pruning methods. Static and DPF run the same mechanism (pruning/pruner.py) and differ
only in these switches, so a new variant is one entry here, not another if/elif branch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    regrow: bool            # masks recomputed from the dense |w|, so pruned weights may return
    straight_through: bool  # the gradient taken at w * m updates the dense w unmasked
    uses_freeze: bool       # a freeze epoch fixes the mask (and masks the gradient) from then on
    description: str


PRUNING_METHODS: dict[str, MethodSpec] = {
    "static": MethodSpec(regrow=False, straight_through=False, uses_freeze=False,
                         description="gradual magnitude pruning; the mask only shrinks, gradients masked"),
    "dpf": MethodSpec(regrow=True, straight_through=True, uses_freeze=True,
                      description="Dynamic Pruning with Feedback (Lin et al., ICLR 2020)"),
}
