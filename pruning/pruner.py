"""One pruning mechanism; static and DPF differ only in two switches (see PRUNING_METHODS).

The model's conv weights always hold w * m between steps, so eval-mode forwards, state_dict() and
checkpoints are exactly sparse, and nothing about the model class changes (plain keys, torch.compile
sees ordinary parameters). Per training step:

  forward/backward with w * m -> gradient g taken at the masked weight
  before_optimizer_step:  static (or DPF after freeze): g <- g * m  (pruned weights get no update)
                          DPF before freeze: load the dense w into the parameter, so the optimizer
                          applies the unmasked g to dense w (straight-through; pruned weights move)
  after_optimizer_step:   DPF: keep the updated dense w aside; parameter <- w * m
                          static: parameter <- parameter * m (momentum and weight decay would
                          otherwise move a pruned weight off zero; fragile spot)

Masks are refreshed every prune_freq iterations (and exactly at the target iteration) along the
cubic schedule. Static ranks only unpruned weights, so its mask only shrinks; DPF ranks the dense
|w|, so pruned weights can return (counted as reactivations).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from pruning.masks import global_magnitude_masks, measure_sparsity, prunable_parameters, scheduled_sparsity
from utils.errors import UsageError


@dataclass(frozen=True)
class MethodSpec:
    regrow: bool           # masks recomputed from dense |w| (pruned weights may return)
    straight_through: bool  # gradient at masked weights applied to dense w, unmasked
    uses_freeze: bool      # has a freeze epoch after which the mask is fixed


# Registry: method name -> behaviour switches.
PRUNING_METHODS: dict[str, MethodSpec] = {
    "static": MethodSpec(regrow=False, straight_through=False, uses_freeze=False),
    "dpf": MethodSpec(regrow=True, straight_through=True, uses_freeze=True),
}


class Pruner:
    def __init__(self, method: str, model: nn.Module, sparsity: float, iters_per_epoch: int,
                 target_epoch: int, freeze_epoch: int | None = None, prune_freq: int = 16):
        if method not in PRUNING_METHODS:
            raise UsageError(f"unknown pruning method '{method}'; valid: {', '.join(PRUNING_METHODS)}")
        if not 0 < sparsity < 1:
            raise UsageError(f"sparsity must be in (0, 1), got {sparsity}")
        spec = PRUNING_METHODS[method]
        if spec.uses_freeze and freeze_epoch is not None and freeze_epoch < target_epoch:
            raise UsageError(f"freeze epoch {freeze_epoch} is before the target epoch {target_epoch}")
        if prune_freq <= 0 or target_epoch < 0:
            raise UsageError("prune_freq must be positive and target_epoch non-negative")
        self.method, self.spec, self.s_f, self.freq = method, spec, float(sparsity), int(prune_freq)
        self.target_epoch, self.freeze_epoch = target_epoch, freeze_epoch if spec.uses_freeze else None
        self.target_iter = target_epoch * iters_per_epoch
        self.freeze_iter = None if self.freeze_epoch is None else self.freeze_epoch * iters_per_epoch
        self.iters_per_epoch = iters_per_epoch
        self.model = model
        named = prunable_parameters(model)
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.mask_list = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        self.dense = [p.detach().clone() for p in self.params] if spec.regrow else None
        self.frozen = False
        self.current = 0.0            # scheduled sparsity of the current masks
        self.refresh_log: list[dict] = []  # refreshes since the last end_epoch()

    # -- masks ------------------------------------------------------------------------------
    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.mask_list))

    @property
    def straight_through(self) -> bool:
        return self.spec.straight_through and not self.frozen

    @torch.no_grad()
    def _refresh(self, it: int) -> None:
        s = scheduled_sparsity(it, self.s_f, self.target_iter)
        if self.spec.regrow:
            scores = [w.abs() for w in self.dense]
        else:  # static: pruned weights score -1, so they are pruned first and never return
            scores = [torch.where(m, p.abs(), torch.full_like(p, -1.0)) for p, m in zip(self.params, self.mask_list)]
        new = global_magnitude_masks(scores, s)
        reactivated = sum(int((n & ~o).sum()) for n, o in zip(new, self.mask_list))
        self.mask_list = new
        self._apply_masks()
        self.current = s
        self.refresh_log.append({"iter": it, "scheduled_sparsity": s, "reactivations": reactivated})

    @torch.no_grad()
    def _apply_masks(self) -> None:
        if self.dense is not None:  # DPF before freeze: parameter <- dense w * m
            for p, d, m in zip(self.params, self.dense, self.mask_list):
                torch.mul(d, m, out=p.data)
        else:
            for p, m in zip(self.params, self.mask_list):
                p.data.mul_(m)

    # -- training-loop hooks ----------------------------------------------------------------
    def before_step(self, it: int) -> None:
        """Before the forward pass of global iteration `it`."""
        if self.freeze_iter is not None and it >= self.freeze_iter and not self.frozen:
            self._freeze()
        if self.frozen:
            return
        due = it % self.freq == 0 or it == self.target_iter
        if due and (it <= self.target_iter or self.spec.regrow):
            self._refresh(it)

    @torch.no_grad()
    def _freeze(self) -> None:
        """DPF from the freeze epoch on: the current mask is final; dense weights at pruned positions are
        dropped (the parameter already holds w * m) and gradients are masked from now on."""
        self.frozen = True
        self.dense = None

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        if self.straight_through:
            for p, d in zip(self.params, self.dense):
                p.data.copy_(d)  # optimizer updates dense w with the gradient taken at w * m
        else:
            for p, m in zip(self.params, self.mask_list):
                if p.grad is not None:
                    p.grad.mul_(m)

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        if self.straight_through:
            for p, d, m in zip(self.params, self.dense, self.mask_list):
                d.copy_(p.data)
                p.data.mul_(m)
        else:
            for p, m in zip(self.params, self.mask_list):
                p.data.mul_(m)

    def end_epoch(self, epoch: int) -> dict:
        """History entry: schedule, measured sparsity and reactivations (0 -> 1 flips) per refresh."""
        log, self.refresh_log = self.refresh_log, []
        zeros = sum(int((~m).sum()) for m in self.mask_list)
        total = sum(m.numel() for m in self.mask_list)
        return {"scheduled_sparsity": self.current, "mask_sparsity": zeros / max(total, 1),
                "refreshes": len(log), "reactivations": sum(r["reactivations"] for r in log),
                "reactivations_per_refresh": [r["reactivations"] for r in log], "mask_frozen": self.frozen}

    def at_target(self, epoch: int) -> bool:
        """True once the schedule has reached the target sparsity by the end of `epoch` (0-based)."""
        return (epoch + 1) * self.iters_per_epoch - 1 >= self.target_iter

    # -- saving -------------------------------------------------------------------------------
    def sparse_state_dict(self) -> dict:
        """The model's state_dict: between steps parameters hold w * m, so pruned weights are zeros."""
        return self.model.state_dict()

    @torch.no_grad()
    def load_masks(self, masks: dict[str, torch.Tensor]) -> None:
        self.mask_list = [masks[n].to(p.device, torch.bool) for n, p in zip(self.names, self.params)]
        if self.dense is not None:
            for d, p in zip(self.dense, self.params):
                d.copy_(p.data)
        self._apply_masks()

    def summary(self) -> dict:
        return {"prune_method": self.method, "target_sparsity": self.s_f, "prune_freq": self.freq,
                "target_epoch": self.target_epoch, "freeze_epoch": self.freeze_epoch,
                **measure_sparsity(self.model)}


def build_pruner(method: str, model: nn.Module, sparsity: float, iters_per_epoch: int, target_epoch: int,
                 freeze_epoch: int | None = None, prune_freq: int = 16) -> Pruner:
    """Call before creating the optimizer's state; the trainer calls the hooks in this order per step:
    before_step(it) -> forward/backward -> before_optimizer_step() -> optimizer.step() -> after_optimizer_step()."""
    return Pruner(method, model, sparsity, iters_per_epoch, target_epoch, freeze_epoch, prune_freq)
