"""Step hooks: how pruning methods and defenses act on a training step, packed or not (docs/training.md).

A step hook is any object with these three methods; the Trainer (training/trainer.py) runs its hooks in order
(the pruning method's, then the defense's) at each training step:

  before_step(it)          before zero_grad and the forward pass of global iteration it = epoch * iters + i,
                           the networks in train mode: a mask refresh when due (gmp, DPF; Pruner.before_step)
  forward + backward       under autocast (training/precision.py), loss scaled by the GradScaler (fp16)
  (GradScaler.unscale_)    fp16 only: the gradients are unscaled before any hook sees them, so a hook masks,
                           clips or ranks true gradients
  after_backward() -> bool the gradients are those of this step (p.grad; per-example ones for DP-SGD), the
                           weights still those the forward used: mask the gradients (static, gmp, frozen DPF),
                           swap DPF's dense weights in (straight-through), RigL's drop-and-grow, DP-SGD's
                           clipping and noise. False vetoes this step's optimizer step (RigL's update replaces
                           it); every hook's after_backward runs whatever an earlier one returned
  optimizer.step()         through the GradScaler (a step with an inf or NaN gradient is skipped by it)
  after_optimizer_step()   re-zero pruned weights (momentum and weight decay moved them), DPF's dense copy and
                           re-mask, SET's drop-and-grow. Also after a vetoed or skipped step: it must hold for
                           unchanged weights

Once per Trainer, a hook may also offer
  step_network(net)        the module a step's forward and backward run instead of net (DP-SGD: Opacus's
                           GradSampleModule, for per-example gradients); None: net itself
  generator                a torch.Generator it draws from (DP-SGD's noise): part of the Trainer's state
                           (state_dict "shared"/"opt_rng"), so a resumed run continues its stream

What a hook may read of the Trainer: cfg, device, batch, iters, seats (per model: index, seed, model, pruner),
nets, opt (its parameter groups and state; a hook never replaces it). A pack's models share one network
(grouped) or one optimizer step (sequential): a hook over per-model state holds one object per model and
runs their tensor work once over the pack (pruning/pruner.PruningHook, with training/packing.tie_masks).
Evaluation (model.eval(), no gradients) runs no hook.
"""
from __future__ import annotations

from typing import Protocol

import torch


class StepHook(Protocol):
    def before_step(self, it: int) -> None: ...

    def after_backward(self) -> bool: ...

    def after_optimizer_step(self) -> None: ...


class StepHooks:
    """A Trainer's step hooks, run in order at each step (module docstring)."""

    def __init__(self, hooks: list):
        self.hooks = [h for h in hooks if h is not None]

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def before_step(self, it: int) -> None:
        for h in self.hooks:
            h.before_step(it)

    def after_backward(self) -> bool:
        """Every hook's after_backward; False if any vetoed the optimizer step."""
        return all([h.after_backward() is not False for h in self.hooks])

    def after_optimizer_step(self) -> None:
        for h in self.hooks:
            h.after_optimizer_step()

    def step_network(self, net: torch.nn.Module) -> torch.nn.Module | None:
        """The module a step runs instead of net (the last hook that offers one), or None."""
        found = None
        for h in self.hooks:
            wrap = getattr(h, "step_network", None)
            found = (wrap(net) if wrap else None) or found
        return found

    @property
    def generator(self) -> torch.Generator | None:
        """The random stream a hook draws from (DP-SGD's noise), or None."""
        return next((h.generator for h in self.hooks if getattr(h, "generator", None) is not None), None)
