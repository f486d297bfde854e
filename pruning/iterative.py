"""Iterative pruning of a trained model in rounds: IMP and the lottery ticket (docs/pruning.md, "Iterative").

Both start from dense model i of the same study (training/sources.py) and run R rounds in one training loop
of R x E epochs. At the first epoch of round r (r = 1..R) the model is pruned by magnitude to

    s_r = 1 - (1 - s)^(r / R)          (the last round exactly s: the same fraction of the survivors each round)

with the pruned weights scored below every live one, so the mask only shrinks; then the round trains E epochs
with a fresh optimizer (zero momentum) and its learning-rate schedule restarted (Trainer.fit):

imp  (WeMeM, NDSS 2025: NNI's LotteryTicketPruner without weight reset, 5 rounds): the survivors keep their
     trained values and each round fine-tunes --finetune-epochs with the fine-tuning recipe (--finetune-lr,
     --finetune-milestones). Global magnitude, or each layer to s_r (--prune-scope layer).
lth  (Frankle & Carbin ICLR 2019; rewinding: Frankle et al. ICML 2020; facebookresearch/open_lth
     `pruning/sparse_global.py`, `lottery/runner.py`): global magnitude, then the whole model (weights, biases,
     BatchNorm) is rewound to dense model i's state at the end of epoch k = --rewind-epoch (0: its
     initialisation), the mask applied, and the round retrains epochs k..N of the dense recipe (E = N - k, the
     schedule from epoch k on, as open_lth's retraining from the rewind step). open_lth prunes 20% of the
     remaining weights per round; here the default R is the fewest rounds that prune at most 20% per round
     (default_rounds), each the same fraction (0.189 for s = 0.9: 11 rounds); --prune-rounds sets fewer, larger
     rounds. Every round costs a full training: train.py --dry-run states rounds x epochs.

The rewind point is an artifact of the dense run (artifacts/paths.REWIND, docs/run_directory.md): the dense
model's training keeps its state at the end of the epochs REWIND_EPOCHS. Epoch 0, the initialisation, is also
a deterministic function of the seed and the model index (training/model_io.initial_state): dense runs made
before the artifact existed serve --rewind-epoch 0 by regenerating it (tests/test_iterative.py checks it equals
the saved one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

REWIND_EPOCHS = (0, 1, 2, 4)  # the epochs whose end state every dense run keeps (its rewind points)
LTH_FRACTION = 0.2            # open_lth's default pruning fraction per round (pruning_fraction)


def round_sparsity(sparsity: float, rounds: int, r: int) -> float:
    """Sparsity after round r (1-based) of `rounds`: 1 - (1 - s)^(r / R), exactly s at r = R."""
    return float(sparsity) if r >= rounds else 1.0 - (1.0 - sparsity) ** (r / rounds)


def lth_rounds(sparsity: float) -> int:
    """The fewest rounds reaching `sparsity` with at most LTH_FRACTION of the remaining weights pruned per round."""
    return max(1, math.ceil(math.log(1.0 - sparsity) / math.log(1.0 - LTH_FRACTION) - 1e-9))


@dataclass(frozen=True)
class Iterative:
    """How a method's rounds train (MethodSpec.iterative names one)."""
    rewind: bool          # survivors rewound to the dense run's state at --rewind-epoch (lth), else kept (imp)
    finetune_recipe: bool  # each round runs the fine-tuning recipe (--finetune-*), else the dense recipe from k
    default_rounds: object  # sparsity -> rounds when --prune-rounds is not given


# Registry: MethodSpec.iterative -> its rounds
ITERATIVE: dict[str, Iterative] = {
    "imp": Iterative(rewind=False, finetune_recipe=True, default_rounds=lambda s: 5),  # WeMeM's 5 rounds
    "lth": Iterative(rewind=True, finetune_recipe=False, default_rounds=lth_rounds),
}


def round_schedule(epochs: int, lr: float, milestones: list[int], gamma: float, offset: int,
                   rounds: int) -> tuple[int, float, list[int]]:
    """(epochs, learning rate, milestones) of the whole loop: `rounds` rounds, each the schedule (epochs, lr,
    milestones) from epoch `offset` on, i.e. E = epochs - offset epochs starting at the rate the schedule has at
    `offset` (decays at or before it applied), its later decays at r x E + (m - offset). The loop restarts the
    rate at each round's first epoch (Trainer.fit), so a decay shifted to 0 belongs to the starting rate."""
    length = epochs - offset
    start = lr * gamma ** sum(m <= offset for m in milestones)
    local = [m - offset for m in milestones if offset < m < epochs]
    return rounds * length, float(f"{start:.12g}"), [r * length + m for r in range(rounds) for m in local]
