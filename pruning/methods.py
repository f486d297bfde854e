"""Registry of pruning methods (docs/pruning.md has the table and the papers).

Every method runs the same mechanism (pruning/pruner.py) and differs only in these switches, so a new
variant is one entry here, not another if/elif branch. `dense`, the unpruned baseline, is an entry too
(prunes=False): a configuration's method is one name of this registry (configs/config.py `method`).
`revision` is part of each run's recipe: a method whose meaning changes gets a new revision, so runs
made under the old meaning are refused instead of being mixed with new ones (training/experiment.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class MethodSpec:
    one_shot: bool          # pruned once to the target sparsity at initialisation, mask fixed for the run
    regrow: bool            # masks recomputed from the dense |w|, so pruned weights may return
    straight_through: bool  # the gradient taken at w * m updates the dense w unmasked
    uses_freeze: bool       # a freeze epoch fixes the mask (and masks the gradient) from then on
    revision: int           # bumped when the method's meaning changes (recorded in config.json)
    description: str
    extra: bool = False     # not in train.py's default --methods (the study compares dense, static, dpf)
    criterion: str = "magnitude"  # how a one-shot method ranks what it prunes (pruning/criteria.py CRITERIA)
    scoped: bool = False    # --prune-scope (global | layer) applies: one-shot magnitude pruning
    source: str | None = None  # None: trained from scratch; "dense": prune dense model i of the same study, then fine-tune it
    pairs_with: tuple[str, ...] = ()  # methods it is compared with at the same sparsity (mia/compare.py default pairs)
    scorer: str | None = None  # one-shot at initialisation by a saliency that runs the network (pruning/saliency.py
    #                            SCORERS: snip, synflow): the mask is made by Pruner.at_init, which the trainer calls
    grow: str | None = None    # dynamic sparse training (pruning/dynamic.py GROWERS: rigl's gradient, set's random):
    #                            fixed per-layer sparsity, weights dropped by |w| and as many grown every --prune-freq
    options: tuple[str, ...] = ()  # its own config fields (configs/config.py METHOD_OPTIONS), refused for other methods
    iterative: str | None = None  # pruned in rounds from the trained dense model (pruning/iterative.py ITERATIVE:
    #                               imp keeps the survivors, lth rewinds them), each round a stretch of training
    prunes: bool = True     # False for dense only: no pruner, sparsity 0, no pruning flag applies
    step: Callable | None = None  # a step rule: (its model's Pruner) -> an object with before_step(it), after_backward()
    #                               (False: skip the optimizer step) and after_optimizer_step(), run inside the pruner's
    #                               step hooks (docs/training.md), which makes the masks (Pruner.set_masks) from what it
    #                               reads there (Pruner.slot("grad"): the model's gradient, packed or not)

    @property
    def uses_target(self) -> bool:
        """Gradual methods follow the cubic schedule to --target-epoch; one-shot, dynamic and iterative ones have none."""
        return self.prunes and not self.one_shot and self.grow is None and self.iterative is None

    @property
    def finetunes(self) -> bool:
        """Trains with the fine-tuning recipe (--finetune-*): made from a trained model, but for lth, whose rounds
        retrain with the dense recipe."""
        from pruning.iterative import ITERATIVE

        return self.source is not None and (self.iterative is None or ITERATIVE[self.iterative].finetune_recipe)


PRUNING_METHODS: dict[str, MethodSpec] = {
    "dense": MethodSpec(one_shot=False, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                        description="no pruning: the dense baseline every method is compared with", prunes=False),
    # revision 1 of "static" (until 2026-11-29) was gradual magnitude pruning: that is "gmp" now
    "static": MethodSpec(one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=2,
                         description="one-shot global magnitude pruning at initialisation, fixed mask", scoped=True),
    "dpf": MethodSpec(one_shot=False, regrow=True, straight_through=True, uses_freeze=True, revision=1,
                      description="Dynamic Pruning with Feedback (Lin et al., ICLR 2020)", pairs_with=("static",)),
    "gmp": MethodSpec(one_shot=False, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                      description="gradual magnitude pruning (Zhu & Gupta 2017); the mask only shrinks", extra=True),
    # Prune a trained model, then fine-tune it (mia_prune, USENIX Security 2022; WeMeM, NDSS 2025): model i
    # starts from dense model i of the same study, is pruned once, and is fine-tuned with the mask fixed
    # (--finetune-epochs, --finetune-lr). docs/pruning.md, "Prune, then fine-tune".
    "finetune": MethodSpec(one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                           description="magnitude pruning of the trained dense model (--prune-scope global | layer: "
                                       "mia_prune's l1unstructure), then fine-tuning",
                           extra=True, scoped=True, source="dense", pairs_with=("static",)),
    "filter_l1": MethodSpec(one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                            description="each conv's output filters with the smallest L1 norm removed (per layer; "
                                        "mia_prune's l1structure), then fine-tuning",
                            extra=True, criterion="filter_l1", source="dense", pairs_with=("finetune",)),
    "filter_l2": MethodSpec(one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                            description="each conv's output filters with the smallest L2 norm removed (per layer; "
                                        "mia_prune's l2structure), then fine-tuning",
                            extra=True, criterion="filter_l2", source="dense", pairs_with=("finetune",)),
    "slim": MethodSpec(one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                       description="network slimming: channels with the smallest BatchNorm |gamma| removed (global; "
                                   "Liu et al. ICCV 2017, mia_prune's slim), then fine-tuning",
                       extra=True, criterion="bn_gamma", source="dense", pairs_with=("finetune",)),
    # The sparse-training family (docs/pruning.md, "Pruning at initialisation" and "Dynamic sparse training").
    "snip": MethodSpec(one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                       description="SNIP (Lee et al., ICLR 2019): at initialisation, global top-k of |w * dL/dw| over "
                                   "--snip-batches mini-batches of the model's own training subset; fixed mask",
                       extra=True, scorer="snip", options=("snip_batches",), pairs_with=("static",)),
    "synflow": MethodSpec(one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                          description="SynFlow (Tanaka et al., NeurIPS 2020): data-free, --synflow-rounds rounds of "
                                      "|w * dR/dw| (R: the |w| network's summed output on an all-ones input); fixed mask",
                          extra=True, scorer="synflow", options=("synflow_rounds",), pairs_with=("static",)),
    # regrow=False: their pruned weights do return, but by the grow rule, not from DPF's dense |w|
    "rigl": MethodSpec(one_shot=False, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                       description="RigL (Evci et al., ICML 2020): fixed per-layer sparsity (ERK), every --prune-freq "
                                   "steps drop the smallest |w| and grow as many by largest |dense gradient|, at zero",
                       extra=True, grow="gradient", options=("drop_fraction", "density"), pairs_with=("static",)),
    "set": MethodSpec(one_shot=False, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                      description="SET (Mocanu et al., Nature Communications 2018) on RigL's schedule: drop the "
                                  "smallest |w|, grow as many at random, at zero",
                      extra=True, grow="random", options=("drop_fraction", "density"), pairs_with=("static", "rigl")),
    # Iterative pruning of the trained dense model (docs/pruning.md, "Iterative pruning"; pruning/iterative.py).
    "imp": MethodSpec(one_shot=False, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                      description="iterative magnitude pruning of the trained dense model (WeMeM, NDSS 2025): "
                                  "--prune-rounds rounds, each pruning to 1 - (1 - s)^(r/R) and fine-tuning "
                                  "--finetune-epochs; the survivors keep their values",
                      extra=True, scoped=True, source="dense", iterative="imp", options=("prune_rounds",),
                      pairs_with=("finetune", "static")),
    "lth": MethodSpec(one_shot=False, regrow=False, straight_through=False, uses_freeze=False, revision=1,
                      description="lottery ticket with rewinding (Frankle & Carbin, ICLR 2019; Frankle et al., "
                                  "ICML 2020): rounds of global magnitude pruning of the trained dense model, the "
                                  "survivors rewound to its state at --rewind-epoch, then retrained",
                      extra=True, source="dense", iterative="lth", options=("prune_rounds", "rewind_epoch"),
                      pairs_with=("imp", "static")),
}


# What a method meant at an earlier revision, for the message that refuses to reuse such runs.
FORMER_MEANINGS: dict[tuple[str, int], str] = {
    ("static", 1): "gradual magnitude pruning (now --prune-method gmp)",
}


def former_meaning(method: str, revision) -> str | None:
    return FORMER_MEANINGS.get((method, revision))


def method_revision(method: str) -> int:
    """Revision of a method's meaning (an unknown name, refused by the config's validation: 1)."""
    return PRUNING_METHODS[method].revision if method in PRUNING_METHODS else 1
