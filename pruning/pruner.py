"""One masking mechanism for every method: the tensor swap.

Between steps each prunable parameter holds w * m. Hence eval-mode forwards, state_dict() and
checkpoints are exactly sparse and the model class is untouched (plain state_dict keys; torch.compile
sees ordinary parameters, and the in-place .data writes below happen outside the compiled graph).
DPF keeps its dense weights w aside (one extra copy of the conv weights, dropped at freeze).
Per training iteration, through the step hooks (training/hooks.py, docs/training.md: one PruningHook over
the pruners of the models a Trainer steps, one model's or a pack's):

  before_step(it)           refresh masks when due (every prune_freq its, and at the target iteration)
  forward + backward        with w * m: p.grad is the gradient taken at the masked weight (unscaled: fp16's
                            GradScaler is unscaled before any hook)
  after_backward()          each model's changes that read its gradient (RigL's update, a step rule's), then
                            static, gmp, frozen DPF: p.grad *= m (pruned weights get no gradient)
                            DPF: p <- dense w, so the optimizer applies the unmasked gradient (and its
                            momentum and weight decay) to w: straight-through, pruned weights keep moving
  optimizer.step()          (skipped where after_backward returned False)
  after_optimizer_step()    DPF: dense w <- p, then p <- w * m
                            static, gmp: p *= m, because momentum buffers filled before a weight was pruned
                            and weight decay would otherwise move it off zero; then SET's update, a step rule's

and, before the first step of each round of an iterative method (imp, lth; pruning/iterative.py):

  start_round(epoch)        prune the live weights by magnitude to the round's sparsity (the mask only shrinks),
                            lth: rewind the model to the dense run's state at --rewind-epoch, then mask it;
                            the trainer restarts the round's learning rate and momentum

and once, before the first step of a run (not of a resumed one):

  at_init(batches)          snip, synflow: the mask made by a saliency that runs the network on the model's own
                            training batches (an iterable of (x, y); SynFlow reads only their shape). Every
                            other method's mask is made at construction: a no-op for them.

Dynamic sparse training (rigl, set; pruning/dynamic.py) changes the topology at update steps, inside the two
optimizer hooks: RigL in after_backward(), which then returns False: the update replaces that step's
optimizer step (the trainer skips it); SET in after_optimizer_step(). Each reads its gradients and resets the
momentum of new connections through slot(kind), which a trainer points at its parameters' parts (a pack's
gradients and momentum are slices of packed tensors: training/trainer.py). A method with a step rule
(MethodSpec.step) makes its masks the same way, from its own hooks (set_masks), reading slot("grad").

Fragile spots:
  * anything reading the parameters between after_backward() and after_optimizer_step()
    (an EMA model, gradient clipping by weight norm) sees DPF's dense weights; a hook that clips
    gradients runs after this one (the trainer's order) so a masked method's are masked;
  * a skipped step (GradScaler on inf) is harmless: after_optimizer_step() re-masks unchanged weights;
  * optimizer state is keyed by parameter object, untouched here: DPF's momentum lives on the dense w
    (as in Lin et al.), static and gmp momentum at pruned positions is ignored by the re-zeroing;
  * DPF's dense weights are not in the model's state_dict: a resumable state (training/resume.py) saves
    them with the masks and counters (state_dict()), beside the model's own state_dict.
Cost per iteration: 2-3 elementwise passes over the conv weights, each one foreach call over every
conv (a few kernel launches, not one per conv: a ResNet-20 step on a GPU is launch-bound); the global
threshold runs only at refresh iterations, with no host sync.

The per-step tensor work is the module-level functions below, over lists of tensors: PruningHook calls
them over one model's parameters, a sequential pack's, or a packed network's, whose slices are its
models' parameters (training/packing.tie_masks). Masks and DPF's dense weights are therefore updated in place
(their storage never changes), so a pack can hold them as slices of packed tensors too.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from configs.method_options import METHOD_OPTIONS
from pruning.criteria import CRITERIA, SCOPES
from pruning.dynamic import END_FRACTION, GROWERS, drop_and_grow, drop_fraction, layer_kept, random_masks
from pruning.iterative import ITERATIVE, round_sparsity
from pruning.masks import measure_sparsity, prunable_parameters, prune_lowest
from pruning.methods import PRUNING_METHODS
from pruning.saliency import SCORERS
from pruning.schedule import scheduled_sparsity
from utils.errors import UsageError


# -- per-step hooks over lists of tensors (one foreach call each) -----------------------------------------
@torch.no_grad()
def mask_grads(params: list, fmasks: list) -> None:
    """p.grad *= m (static, gmp, frozen DPF: pruned weights get no gradient)."""
    pairs = [(p.grad, m) for p, m in zip(params, fmasks) if p.grad is not None]
    if pairs:
        torch._foreach_mul_([g for g, _ in pairs], [m for _, m in pairs])


@torch.no_grad()
def load_dense(params: list, dense: list) -> None:
    """p <- dense w (DPF before the optimizer step: straight-through)."""
    torch._foreach_copy_(params, dense)


@torch.no_grad()
def store_dense_and_mask(params: list, dense: list, fmasks: list) -> None:
    """dense w <- p, then p <- w * m (DPF after the optimizer step)."""
    torch._foreach_copy_(dense, params)
    torch._foreach_mul_(params, fmasks)


@torch.no_grad()
def mask_params(params: list, fmasks: list) -> None:
    """p <- p * m (static, gmp, frozen DPF after the optimizer step)."""
    torch._foreach_mul_(params, fmasks)


class PruningHook:
    """The step hook (training/hooks.py) of the pruners of the models a Trainer steps: one model's, or a pack's
    K. Each model keeps its Pruner: mask refreshes (global top-k over that model's own weights), freezing,
    topology updates, step rules, history and saving are per model; the per-step tensor work (mask the
    gradients, swap DPF's dense weights in and out, re-mask) is one foreach call over `lists` for all of them.

    lists: (params, fmasks, dense) the hook runs over. Default: the pruners' own lists, concatenated (one
    model; a sequential pack, whose models keep their own tensors; the pruners update masks in place, so the
    lists stay valid). A packed network passes its packed parameters and the masks and dense weights whose
    slices the pruners hold (training/packing.tie_masks). Every pruner follows one schedule (method,
    iterations, target, freeze): their states agree, so pruners[0] answers for all."""

    def __init__(self, pruners: list, lists: tuple[list, list, list | None] | None = None):
        ref = pruners[0]
        for pr in pruners[1:]:
            if (pr.method, pr.s_f, pr.freq, pr.target_iter, pr.freeze_iter, pr.frozen) != \
                    (ref.method, ref.s_f, ref.freq, ref.target_iter, ref.freeze_iter, ref.frozen):
                raise ValueError("the models of a pack must follow one pruning schedule")
        self.pruners = pruners
        if lists is None:
            lists = ([p for pr in pruners for p in pr.params], [m for pr in pruners for m in pr.fmask_list],
                     None if ref.dense is None else [d for pr in pruners for d in pr.dense])
        self.params, self.fmasks, self.dense = lists

    def before_step(self, it: int) -> None:
        """Each model's mask refresh when due (Pruner.before_step)."""
        for pr in self.pruners:
            pr.before_step(it)
        if self.pruners[0].frozen:
            self.dense = None  # DPF's dense weights are dropped at its freeze

    def after_backward(self) -> bool:
        """Each model's mask changes that read its gradient (Pruner.at_backward: RigL's update, a step rule's),
        then one foreach: p.grad *= m (static, gmp, frozen DPF, every fixed mask), or DPF's p <- dense w
        (straight-through). False where an update replaces the optimizer step (every model agrees)."""
        replaced = [pr.at_backward() for pr in self.pruners]
        if self.pruners[0].straight_through:
            load_dense(self.params, self.dense)
        else:
            mask_grads(self.params, self.fmasks)
        return not any(replaced)

    def after_optimizer_step(self) -> None:
        """One foreach: DPF's dense w <- p, p <- w * m; else p *= m (momentum and weight decay would move a
        pruned weight off zero); then each model's changes after the step (Pruner.at_step: SET's update)."""
        if self.pruners[0].straight_through:
            store_dense_and_mask(self.params, self.dense, self.fmasks)
        else:
            mask_params(self.params, self.fmasks)
        for pr in self.pruners:
            pr.at_step()


def _check_settings(method, sparsity, iters_per_epoch, target_epoch, freeze_epoch, prune_freq, scope) -> None:
    if method not in PRUNING_METHODS:
        raise UsageError(f"unknown pruning method '{method}'; valid: {', '.join(PRUNING_METHODS)}")
    if scope not in SCOPES:
        raise UsageError(f"unknown pruning scope '{scope}'; valid: {', '.join(SCOPES)}")
    if scope != "global" and not PRUNING_METHODS[method].scoped:
        raise UsageError(f"--prune-scope {scope} applies to {', '.join(m for m, s in PRUNING_METHODS.items() if s.scoped)} only, "
                         f"not {method}")
    # the range is validated once, by the config (ExperimentConfig.validate); a caller that bypasses it would
    # otherwise train silently wrong: nothing pruned at 0, every weight at 1
    assert 0 < sparsity < 1, f"sparsity must be in (0, 1), got {sparsity}"
    if iters_per_epoch <= 0 or prune_freq <= 0:
        raise UsageError(f"iterations per epoch and prune_freq must be positive, got {iters_per_epoch}, {prune_freq}")
    if target_epoch < 0:
        raise UsageError(f"target epoch must be >= 0, got {target_epoch}")
    if PRUNING_METHODS[method].uses_freeze and freeze_epoch is not None and freeze_epoch < target_epoch:
        raise UsageError(f"freeze epoch {freeze_epoch} is before the target epoch {target_epoch}")


class Pruner:
    def __init__(self, method: str, model: nn.Module, sparsity: float, iters_per_epoch: int,
                 target_epoch: int, freeze_epoch: int | None = None, prune_freq: int = 16, scope: str = "global",
                 options: dict | None = None, seed: int = 0, epochs: int | None = None, rewind: dict | None = None):
        """options: the method's own settings (MethodSpec.options: snip_batches, synflow_rounds, drop_fraction,
        density, prune_rounds, rewind_epoch); seed: the stream of a dynamic method's random masks and SET's growth;
        epochs: the run's length (dynamic methods stop updating at 75% of it; an iterative method's rounds split
        it evenly); rewind: lth's rewind point, the state_dict every round starts from (training/sources.py)."""
        _check_settings(method, sparsity, iters_per_epoch, target_epoch, freeze_epoch, prune_freq, scope)
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
            raise UsageError("the model has no prunable weights (Conv2d, or a Linear before the classifier) to prune")
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.numel = sum(p.numel() for p in self.params)
        self.mask_list = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        # the masks again in the parameters' dtype: foreach multiplies need one dtype (a CUDA fast path)
        self.fmask_list = [torch.ones_like(p) for p in self.params]
        self.dense = [p.detach().clone() for p in self.params] if self.spec.regrow else None
        self.frozen = False
        self.current = 0.0          # scheduled sparsity of the current masks
        self.num_pruned = 0         # pruned weights in the current masks
        self.total_refreshes = 0
        self._log = []              # (iteration, scheduled sparsity, reactivations tensor) since end_epoch()
        given = {k: v for k, v in (options or {}).items() if v is not None}
        self.options = {**{f: METHOD_OPTIONS[f] for f in self.spec.options}, **given}  # defaults: configs/config.py
        self.pending_init = self.spec.scorer is not None  # snip, synflow: the mask is made by at_init()
        self.gen = None             # a dynamic method's CPU stream (initial masks, SET's growth)
        self.slot = self._own_slot  # where gradients and momentum are read (a trainer repoints it)
        self._it, self._own_hook = 0, None
        # a method's own step rule (MethodSpec.step): it makes the masks at its hooks (set_masks)
        self.rule = self.spec.step(self) if self.spec.step is not None else None
        if self.spec.one_shot and not self.pending_init and self.rule is None:  # static, finetune, filter pruners: pruned here, before
            self._prune_once(scope)  # any step, by the method's criterion; the mask is final, so frozen at once
        if self.spec.grow:
            self._init_dynamic(seed, epochs)
        if self.spec.iterative:
            self._init_rounds(scope, epochs, rewind)

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
        new = prune_lowest(self._scores(), n_prune)
        flips = sum((n & ~o).sum() for n, o in zip(new, self.mask_list))  # 0 -> 1; a tensor: no host sync
        # in place: the masks keep their storage (and the parameter's memory format, channels_last)
        torch._foreach_copy_(self.mask_list, new)
        torch._foreach_copy_(self.fmask_list, new)
        self.num_pruned, self.current = n_prune, s
        self.total_refreshes += 1
        self._log.append((it, s, flips))
        self._apply_masks()

    @torch.no_grad()
    def _prune_once(self, scope: str) -> None:
        """One-shot pruning by the method's criterion (pruning/criteria.py): global or per-layer magnitude over
        the prunable weights, or whole channels (then the lists also hold conv biases and BatchNorm scales
        and shifts, masked like weights). Counted as the one refresh, at iteration 0."""
        masks = CRITERIA[self.spec.criterion](self.model, self.s_f, scope)
        params = dict(self.model.named_parameters())
        self.names, self.params = list(masks), [params[n] for n in masks]
        self.numel = sum(p.numel() for p in self.params)
        # allocated like the parameters (memory format: channels_last), then filled
        self.mask_list = [torch.ones_like(p, dtype=torch.bool) for p in self.params]
        self.fmask_list = [torch.ones_like(p) for p in self.params]
        new = [masks[n] for n in self.names]
        torch._foreach_copy_(self.mask_list, new)
        torch._foreach_copy_(self.fmask_list, new)
        self.num_pruned, self.current = sum(int((~m).sum()) for m in new), self.s_f
        self.total_refreshes = 1
        self._log.append((0, self.s_f, torch.zeros((), dtype=torch.long, device=self.params[0].device)))
        self._freeze()

    def at_init(self, batches) -> None:
        """snip, synflow: prune once at initialisation by the method's saliency (pruning/saliency.py SCORERS) on
        the model's own training batches, to exactly the target sparsity; the mask is then fixed. The trainer
        calls it before the first step, packed or not (the masks are filled in place). A no-op for every other
        method, and once the mask is made (a resumed run's masks come from its state)."""
        if not self.pending_init:
            return
        scorer = SCORERS[self.spec.scorer]
        kw = {arg: self.options[f] for f, arg in scorer.options.items()}
        new = scorer.masks(self.model, self.s_f, batches, **kw)  # runs the network: gradients on
        with torch.no_grad():
            torch._foreach_copy_(self.mask_list, new)
            torch._foreach_copy_(self.fmask_list, new)
        self.num_pruned, self.current, self.total_refreshes = sum(int((~m).sum()) for m in new), self.s_f, 1
        self._log.append((0, self.s_f, torch.zeros((), dtype=torch.long, device=self.params[0].device)))
        self.pending_init = False
        self._freeze()

    @torch.no_grad()
    def _init_dynamic(self, seed: int, epochs: int | None) -> None:
        """rigl, set: fixed per-layer counts (ERK or uniform, the first layer dense), random initial masks."""
        if epochs is None:
            raise ValueError(f"{self.method} needs the run's epochs (its updates stop at 75% of training)")
        self.gen = torch.Generator().manual_seed(int(seed))
        shapes = [tuple(p.shape) for p in self.params]
        self.kept = layer_kept(self.names, shapes, self.s_f, self.options["density"])
        new = [m.to(self.params[0].device) for m in random_masks(shapes, self.kept, self.gen)]
        torch._foreach_copy_(self.mask_list, new)
        torch._foreach_copy_(self.fmask_list, new)
        self.num_pruned, self.current = self.numel - sum(self.kept), self.s_f
        self.alpha = float(self.options["drop_fraction"])
        self.end_iter = int(END_FRACTION * epochs * self.iters_per_epoch)
        self._it = 0
        self._apply_masks()

    def _init_rounds(self, scope: str, epochs: int | None, rewind: dict | None) -> None:
        """imp, lth: --prune-rounds rounds of epochs // rounds epochs each; only the last round is at the target
        sparsity, so only its epochs are eligible for the selected checkpoint (at_target)."""
        self.rounds = int(self.options["prune_rounds"] or ITERATIVE[self.spec.iterative].default_rounds(self.s_f))
        if self.rounds < 1:
            raise UsageError(f"--prune-rounds must be at least 1, got {self.rounds}")
        if epochs is None or epochs % self.rounds:
            raise ValueError(f"{self.method} needs the loop's epochs, a multiple of its {self.rounds} rounds; got {epochs}")
        if ITERATIVE[self.spec.iterative].rewind and rewind is None:
            raise ValueError(f"{self.method} rewinds every round: it needs the dense run's rewind point")
        self.round_epochs, self.scope, self.rewind = epochs // self.rounds, scope, rewind
        self.target_iter = (self.rounds - 1) * self.round_epochs * self.iters_per_epoch

    @torch.no_grad()
    def start_round(self, epoch: int) -> bool:
        """imp, lth at the first epoch of round r: prune the live weights by magnitude to round_sparsity(s, R, r),
        globally or each layer (scope), the weights pruned before scored below every live one (the mask only
        shrinks); lth then loads its rewind point into the model (weights, biases, BatchNorm: in place, a pack's
        slices stay tied) and masks it. True where a round starts (the trainer restarts its rate and momentum)."""
        if not self.spec.iterative or epoch % self.round_epochs:
            return False
        s = round_sparsity(self.s_f, self.rounds, epoch // self.round_epochs + 1)
        scores = [torch.where(m, p.detach().abs(), -1.0) for p, m in zip(self.params, self.mask_list)]
        if self.scope == "global":
            new = prune_lowest(scores, max(int(round(s * self.numel)), self.num_pruned))
        else:
            new = [prune_lowest([sc], max(int(round(s * sc.numel())), int((~m).sum())))[0]
                   for sc, m in zip(scores, self.mask_list)]
        torch._foreach_copy_(self.mask_list, new)
        torch._foreach_copy_(self.fmask_list, new)
        if self.rewind is not None:
            self.model.load_state_dict(self.rewind)
        self.num_pruned, self.current = sum(int((~m).sum()) for m in new), s
        self.total_refreshes += 1
        self._log.append((epoch * self.iters_per_epoch, s, torch.zeros((), dtype=torch.long, device=self.params[0].device)))
        mask_params(self.params, self.fmask_list)
        return True

    def _own_slot(self, kind: str) -> list:
        """The parameters' gradients ('grad'), or their momentum ('momentum': none known without a trainer)."""
        return [p.grad for p in self.params] if kind == "grad" else [None] * len(self.params)

    @torch.no_grad()
    def update_topology(self, replaces_step: bool) -> bool:
        """rigl, set at an update step (every prune_freq steps until 75% of training): drop and grow in each
        layer (pruning/dynamic.py), new connections at zero with zero momentum. Called in both optimizer hooks
        (replaces_step: from after_backward); True where it updated."""
        grower = GROWERS.get(self.spec.grow)
        if grower is None or grower.replaces_step != replaces_step:  # not a dynamic method (no step counter)
            return False
        it = self._it
        if it % self.freq or it > self.end_iter:
            return False
        scores = grower.scores(self, self.gen)
        new, grown = drop_and_grow(self.params, self.mask_list, scores, drop_fraction(it, self.alpha, self.end_iter))
        for p, g, mom in zip(self.params, grown, self.slot("momentum")):
            p.masked_fill_(g, 0.0)  # a new connection starts at exactly zero (a regrown one keeps its weight)
            if mom is not None:
                mom.masked_fill_(g, 0.0)
        torch._foreach_copy_(self.mask_list, new)
        torch._foreach_copy_(self.fmask_list, new)
        mask_params(self.params, self.fmask_list)
        self.total_refreshes += 1
        self._log.append((it, self.s_f, sum(g.sum() for g in grown)))
        return True

    @torch.no_grad()
    def _apply_masks(self) -> None:
        """parameter <- w * m (w: DPF's dense copy, else the parameter itself)."""
        if self.dense is not None:
            load_dense(self.params, self.dense)
        mask_params(self.params, self.fmask_list)

    @torch.no_grad()
    def _freeze(self) -> None:
        """The mask is final from here on: DPF from its freeze iteration (the dense values at pruned
        positions are dropped, the parameter holds w * m, gradients are masked like gmp's), static from
        its one-shot pruning at initialisation."""
        self._apply_masks()
        self.frozen, self.dense = True, None

    # -- training-loop hooks (run through PruningHook: training/hooks.py) --------------------------------
    def before_step(self, it: int) -> None:
        """Before the forward pass of global iteration it = epoch * iters_per_epoch + i: the mask refresh
        when due, and a step rule's before_step."""
        if self.pending_init:
            raise RuntimeError(f"{self.method}: at_init(batches) must run before the first step")
        self._it = it
        if self.rule is not None:
            self.rule.before_step(it)
        if self.frozen or self.spec.grow or self.spec.iterative or self.rule is not None:
            return  # dynamic: in the optimizer hooks; iterative: start_round; a step rule: its own hooks
        due = it % self.freq == 0 or it == self.target_iter  # the target iteration: final sparsity exact
        if due and (it <= self.target_iter or self.spec.regrow):  # gmp's mask is final after the target
            self._refresh(it)
        if self.freeze_iter is not None and it >= self.freeze_iter:  # after the refresh: freeze == target works
            self._freeze()

    def at_backward(self) -> bool:
        """This model's mask changes after the backward pass, before the gradients are masked: RigL's update,
        a step rule's after_backward. True where one replaces this step's optimizer step."""
        replaced = self.update_topology(replaces_step=True)
        if self.rule is not None and self.rule.after_backward() is False:
            replaced = True
        return replaced

    def at_step(self) -> None:
        """This model's mask changes after the optimizer step and the re-masking: SET's update, a step rule's."""
        self.update_topology(replaces_step=False)
        if self.rule is not None:
            self.rule.after_optimizer_step()

    # a lone pruner is a step hook itself: the pack hook over this one model
    def after_backward(self) -> bool:
        return self._hook().after_backward()

    def after_optimizer_step(self) -> None:
        self._hook().after_optimizer_step()

    def _hook(self) -> PruningHook:
        if self._own_hook is None:
            self._own_hook = PruningHook([self])
        return self._own_hook

    @torch.no_grad()
    def set_masks(self, new: list[torch.Tensor], freeze: bool = True) -> None:
        """Make `new` (bool keep-masks, one per prunable tensor, in self.names' order) the masks, in place, and
        apply them (parameter <- w * m); counted as a refresh at the current iteration. freeze: the mask is final
        (a one-shot step rule). How a step rule (MethodSpec.step) changes the masks."""
        flips = sum((n & ~o).sum() for n, o in zip(new, self.mask_list))
        torch._foreach_copy_(self.mask_list, new)
        torch._foreach_copy_(self.fmask_list, new)
        self.num_pruned = sum(int((~m).sum()) for m in self.mask_list)
        self.current = self.num_pruned / self.numel
        self.total_refreshes += 1
        self._log.append((self._it, self.current, flips))
        if freeze:
            self._freeze()
        else:
            self._apply_masks()

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

    # -- resuming inside a run (training/resume.py) ---------------------------------------------------
    def state_dict(self) -> dict:
        """What the pruner adds to the model's weights to continue exactly where it is, at a step boundary:
        masks, DPF's dense weights (None once frozen), the schedule's position (the sparsity of the current
        masks and their pruned count), the counters and the refreshes of the epoch in progress (the log
        end_epoch() reports: empty at an epoch's end). The
        schedule itself is a function of the iteration, which the trainer passes; the masks are named, so a
        state from another set of prunable tensors is refused. CPU copies."""
        cpu = lambda ts: [t.detach().to("cpu", copy=True) for t in ts]  # noqa: E731
        return {"names": list(self.names), "masks": cpu(self.mask_list),
                "dense": None if self.dense is None else cpu(self.dense), "frozen": self.frozen,
                "current": self.current, "num_pruned": self.num_pruned, "total_refreshes": self.total_refreshes,
                "rng": None if self.gen is None else self.gen.get_state(),
                "log": [(it, s, int(flips)) for it, s, flips in self._log]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Continue from state_dict()'s state. In place: the masks and dense weights keep their storage (a
        pack's are slices of its packed tensors). The model's weights (w * m) are loaded by the caller."""
        if state["names"] != self.names:
            raise ValueError("the saved masks are not this model's prunable tensors")
        torch._foreach_copy_(self.mask_list, [m.to(self.mask_list[0].device) for m in state["masks"]])
        torch._foreach_copy_(self.fmask_list, self.mask_list)
        if state["dense"] is None:
            self.dense = None  # dropped at the freeze, as _freeze() does
        else:
            torch._foreach_copy_(self.dense, [d.to(self.dense[0].device) for d in state["dense"]])
        self.frozen, self.current = state["frozen"], state["current"]
        self.num_pruned, self.total_refreshes = state["num_pruned"], state["total_refreshes"]
        if self.gen is not None:
            self.gen.set_state(state["rng"])
        self.pending_init = False  # the masks are the state's
        dev = self.mask_list[0].device
        self._log = [(it, s, torch.tensor(flips, device=dev)) for it, s, flips in state.get("log", [])]

    # -- saving ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sparse_state_dict(self) -> dict:
        """A detached copy of model.state_dict() (plain keys) with pruned weights stored as +0.0."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for name, m in zip(self.names, self.mask_list):
            state[name].masked_fill_(~m, 0.0)  # not * m: that leaves -0.0 for negative weights
        return state


def build_pruner(method: str, model: nn.Module, sparsity: float, iters_per_epoch: int, target_epoch: int,
                 freeze_epoch: int | None = None, prune_freq: int = 16, scope: str = "global",
                 options: dict | None = None, seed: int = 0, epochs: int | None = None,
                 rewind: dict | None = None) -> Pruner | None:
    """The method's pruner; None for a method that prunes nothing (dense), whose run has no pruning hooks.
    The trainer calls at_init(batches) once before the first step, then per iteration (through PruningHook):
    before_step(it) -> forward/backward -> after_backward() (False: skip the optimizer step) -> optimizer.step()
    -> after_optimizer_step(); start_round(epoch) before, end_epoch(epoch) and at_target(epoch) after each epoch."""
    if method in PRUNING_METHODS and not PRUNING_METHODS[method].prunes:
        return None
    return Pruner(method, model, sparsity, iters_per_epoch, target_epoch, freeze_epoch, prune_freq, scope,
                  options, seed, epochs, rewind)
