"""One masking mechanism for every method: the tensor swap.

Between steps each prunable parameter holds w * m. Hence eval-mode forwards, state_dict() and
checkpoints are exactly sparse and the model class is untouched (plain state_dict keys; torch.compile
sees ordinary parameters, and the in-place .data writes below happen outside the compiled graph).
DPF keeps its dense weights w aside (one extra copy of the conv weights, dropped at freeze).
Per training iteration:

  before_step(it)           refresh masks when due (every prune_freq its, and at the target iteration)
  forward + backward        with w * m: p.grad is the gradient taken at the masked weight
  before_optimizer_step()   static, gmp, frozen DPF: p.grad *= m (pruned weights get no gradient)
                            DPF: p <- dense w, so the optimizer applies the unmasked gradient (and its
                            momentum and weight decay) to w: straight-through, pruned weights keep moving
  optimizer.step()
  after_optimizer_step()    DPF: dense w <- p, then p <- w * m
                            static, gmp: p *= m, because momentum buffers filled before a weight was pruned
                            and weight decay would otherwise move it off zero

Fragile spots:
  * anything reading the parameters between before_optimizer_step() and after_optimizer_step()
    (an EMA model, gradient clipping by weight norm) sees DPF's dense weights; clip gradients
    after before_optimizer_step() so a masked method sees masked gradients;
  * a skipped step (GradScaler on inf) is harmless: after_optimizer_step() re-masks unchanged weights;
  * optimizer state is keyed by parameter object, untouched here: DPF's momentum lives on the dense w
    (as in Lin et al.), static and gmp momentum at pruned positions is ignored by the re-zeroing;
  * no mid-run resume: the pipeline resumes whole models (a partial one is retrained), so the pruner
    keeps no restorable state; DPF's dense weights are not in the model's state_dict.
Cost per iteration: 2-3 elementwise passes over the conv weights; the global threshold runs only at
refresh iterations, with no host sync.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from pruning.masks import measure_sparsity, prunable_parameters, prune_lowest
from pruning.methods import PRUNING_METHODS
from pruning.schedule import scheduled_sparsity
from utils.errors import UsageError


def _check_settings(method, sparsity, iters_per_epoch, target_epoch, freeze_epoch, prune_freq) -> None:
    if method not in PRUNING_METHODS:
        raise UsageError(f"unknown pruning method '{method}'; valid: {', '.join(PRUNING_METHODS)}")
    if not 0 < sparsity < 1:
        raise UsageError(f"sparsity must be in (0, 1), got {sparsity}")
    if iters_per_epoch <= 0 or prune_freq <= 0:
        raise UsageError(f"iterations per epoch and prune_freq must be positive, got {iters_per_epoch}, {prune_freq}")
    if target_epoch < 0:
        raise UsageError(f"target epoch must be >= 0, got {target_epoch}")
    if PRUNING_METHODS[method].uses_freeze and freeze_epoch is not None and freeze_epoch < target_epoch:
        raise UsageError(f"freeze epoch {freeze_epoch} is before the target epoch {target_epoch}")


class Pruner:
    def __init__(self, method: str, model: nn.Module, sparsity: float, iters_per_epoch: int,
                 target_epoch: int, freeze_epoch: int | None = None, prune_freq: int = 16):
        _check_settings(method, sparsity, iters_per_epoch, target_epoch, freeze_epoch, prune_freq)
        self.method, self.spec, self.s_f, self.freq = method, PRUNING_METHODS[method], float(sparsity), int(prune_freq)
        # one-shot methods (static) have no schedule: target epoch 0, and no freeze epoch (config.py
        # refuses either flag for them); only DPF uses a freeze epoch
        self.iters_per_epoch = int(iters_per_epoch)
        self.target_epoch = int(target_epoch) if self.spec.uses_target else 0
        self.freeze_epoch = freeze_epoch if self.spec.uses_freeze else None
        self.target_iter = self.target_epoch * self.iters_per_epoch
        self.freeze_iter = None if self.freeze_epoch is None else self.freeze_epoch * self.iters_per_epoch
        self.model = model
        named = prunable_parameters(model)
        if not named:
            raise UsageError("the model has no Conv2d weights to prune")
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.numel = sum(p.numel() for p in self.params)
        self.mask_list = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        self.dense = [p.detach().clone() for p in self.params] if self.spec.regrow else None
        self.frozen = False
        self.current = 0.0          # scheduled sparsity of the current masks
        self.num_pruned = 0         # pruned weights in the current masks
        self.total_refreshes = 0
        self._log = []              # (iteration, scheduled sparsity, reactivations tensor) since end_epoch()
        if self.spec.one_shot:      # static: pruned here, right after the model is built, before any step;
            self._refresh(0)        # the mask is final, so it is frozen at once (gradients masked)
            self._freeze()

    # -- masks ----------------------------------------------------------------------------------
    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.mask_list))

    @property
    def straight_through(self) -> bool:
        return self.spec.straight_through and not self.frozen

    def _scores(self) -> list[torch.Tensor]:
        if self.spec.regrow:  # DPF ranks the dense weights: a pruned weight that grew back wins its place
            return [d.abs() for d in self.dense]
        # static, gmp: pruned weights score -1, below every live weight, so they stay pruned (mask only shrinks)
        return [torch.where(m, p.detach().abs(), -1.0) for p, m in zip(self.params, self.mask_list)]

    @torch.no_grad()
    def _refresh(self, it: int) -> None:
        s = scheduled_sparsity(it, self.s_f, self.target_iter)
        n_prune = int(round(s * self.numel))
        if not self.spec.regrow:  # the mask only shrinks: never fewer than already pruned
            n_prune = max(n_prune, self.num_pruned)
        # masks in the parameter's memory format (channels_last), so the per-step multiplies stay cheap
        new = [torch.empty_like(p, dtype=torch.bool).copy_(m)
               for p, m in zip(self.params, prune_lowest(self._scores(), n_prune))]
        flips = sum((n & ~o).sum() for n, o in zip(new, self.mask_list))  # 0 -> 1; a tensor: no host sync
        self.mask_list, self.num_pruned, self.current = new, n_prune, s
        self.total_refreshes += 1
        self._log.append((it, s, flips))
        self._apply_masks()

    @torch.no_grad()
    def _apply_masks(self) -> None:
        """parameter <- w * m (w: DPF's dense copy, else the parameter itself)."""
        for i, (p, m) in enumerate(zip(self.params, self.mask_list)):
            if self.dense is not None:
                torch.mul(self.dense[i], m, out=p.data)
            else:
                p.data.mul_(m)

    @torch.no_grad()
    def _freeze(self) -> None:
        """The mask is final from here on: DPF from its freeze iteration (the dense values at pruned
        positions are dropped, the parameter holds w * m, gradients are masked like gmp's), static from
        its one-shot pruning at initialisation."""
        self._apply_masks()
        self.frozen, self.dense = True, None

    # -- training-loop hooks ----------------------------------------------------------------------
    def before_step(self, it: int) -> None:
        """Before the forward pass of global iteration it = epoch * iters_per_epoch + i."""
        if self.frozen:
            return
        due = it % self.freq == 0 or it == self.target_iter  # the target iteration: final sparsity exact
        if due and (it <= self.target_iter or self.spec.regrow):  # gmp's mask is final after the target
            self._refresh(it)
        if self.freeze_iter is not None and it >= self.freeze_iter:  # after the refresh: freeze == target works
            self._freeze()

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        if self.straight_through:
            for p, d in zip(self.params, self.dense):
                p.data.copy_(d)
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
        """History entry: schedule, measured sparsity, reactivations (0 -> 1 flips) per refresh."""
        log, self._log = self._log, []
        flips = [int(f) for f in torch.stack([f for _, _, f in log]).tolist()] if log else []  # one sync
        return {"scheduled_sparsity": self.current,
                "measured_sparsity": measure_sparsity(self.model)["sparsity"],
                "refreshes": len(log), "total_refreshes": self.total_refreshes,
                "reactivations": sum(flips), "reactivations_per_refresh": flips, "mask_frozen": self.frozen}

    def at_target(self, epoch: int) -> bool:
        """True once the schedule has reached the target sparsity by the end of `epoch` (0-based)."""
        return (epoch + 1) * self.iters_per_epoch > self.target_iter

    # -- saving ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sparse_state_dict(self) -> dict:
        """A detached copy of model.state_dict() (plain keys) with pruned weights stored as +0.0."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for name, m in zip(self.names, self.mask_list):
            state[name].masked_fill_(~m, 0.0)  # not * m: that leaves -0.0 for negative weights
        return state


def build_pruner(method: str, model: nn.Module, sparsity: float, iters_per_epoch: int, target_epoch: int,
                 freeze_epoch: int | None = None, prune_freq: int = 16) -> Pruner:
    """The trainer calls, per iteration: before_step(it) -> forward/backward -> before_optimizer_step()
    -> optimizer.step() -> after_optimizer_step(); end_epoch(epoch) and at_target(epoch) per epoch."""
    return Pruner(method, model, sparsity, iters_per_epoch, target_epoch, freeze_epoch, prune_freq)
