"""The training loop: train models (dense or pruned), each on its subset of the pool: one model alone, or K
models of a configuration at once (training/packing.py, docs/packing.md): as one packed network ("grouped")
or each model's forward and backward in turn with one optimizer step ("sequential"), with one loop for all.

The loop is the same on CPU and CUDA; what the forward computes in is the precision policy
(training/precision.py); channels_last is used on both. Pruning methods and defenses act on a step through
step hooks (training/hooks.py, docs/training.md). The Trainer's state (state_dict / load_state_dict) is what
a resumed run continues from (training/resume.py). Checkpoint selection uses a validation slice of the *test*
split, never the pool, and only epochs at which a pruned model has reached its target sparsity; what a
trained model leaves on disk is written by training/model_io.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from artifacts import paths
from configs.config import ExperimentConfig
from data import ArrayDataset, DeviceData, split_test
from defenses import build_loss, prepare_loop
from pruning import PRUNING_METHODS, build_pruner
from pruning.pruner import PruningHook
from training import resume
from training.hooks import StepHooks
from training.model_io import RewindKeeper, build_for, evaluate, model_seed, param_dtype, write_model
from training.packing import model_slices, pack_mode, pack_models, tie_masks, unpack
from training.precision import AUTOCAST_DTYPES, autocast, configure_backends, grad_scaler, say_precision
from utils.device import resolve_device
from utils.errors import DivergenceError, Preempted, UsageError


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


def _clone_state(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


def config_steps(keep: np.ndarray, batch_size: int) -> tuple[int, int]:
    """(batch, iterations per epoch) of every model of a configuration, from its smallest training set
    (keep: bool [models, pool], the configuration's whole keep matrix): a balanced keep matrix gives
    subsets that differ by a few examples, and every model, packed or not, runs the same steps."""
    n = int(np.asarray(keep).reshape(-1, np.shape(keep)[-1]).sum(1).min())
    if n < 2:
        raise UsageError(f"a model of this configuration has {n} training example(s); BatchNorm needs at least 2")
    batch = min(batch_size, n)
    return batch, n // batch


class Seat:
    """One model's place in a Trainer (a pack of one or of K): its training subset and its own seeded stream
    of batches (shuffling and augmentation), its model (initialised from its own seed) and pruner, its
    history and best state."""

    def __init__(self, cfg: ExperimentConfig, ds: ArrayDataset, keep: np.ndarray, index: int,
                 device: torch.device, batch: int, iters: int, dtype=None, init: dict | None = None,
                 rewind: dict | None = None):
        self.cfg, self.index, self.batch, self.iters = cfg, index, batch, iters
        self.seed = model_seed(cfg.seed, index)  # its initialisation, data stream and any stream of its own
        torch.manual_seed(self.seed)
        self.gen = torch.Generator(device=device).manual_seed(self.seed)
        members = np.flatnonzero(keep)
        self.train = DeviceData.build(ds.x_train[members], ds.y_train[members], ds, device)
        self.model = build_for(cfg, ds, device)
        if init is not None:  # fine-tuning: the trained source model's weights (training/sources.py), pruned below
            self.model.load_state_dict(init)
        if dtype is not None:
            self.model.to(dtype)
        options = {f: getattr(cfg, f) for f in PRUNING_METHODS[cfg.method].options}
        self.pruner = build_pruner(cfg.method, self.model, cfg.sparsity, iters, cfg.target_epoch,
                                   cfg.freeze_epoch, cfg.prune_freq, cfg.prune_scope, options,
                                   seed=model_seed(cfg.seed, index), epochs=cfg.epochs, rewind=rewind)  # dense: None
        self.history, self.best, self.best_key = [], None, None
        self.source = None  # provenance of the trained model it starts from (train_models; training/sources.py)
        self.failed = None  # why it stopped: its numbers are no longer finite (Trainer.fit; a DivergenceError)

    def init_batches(self, device: torch.device):
        """The training batches a pruning-at-initialisation saliency sees (SNIP): the model's own training subset,
        shuffled and augmented as in training, from a stream of its own (seed + 1), so the training stream
        itself is the one every other method of the study sees."""
        gen = torch.Generator(device=device).manual_seed(model_seed(self.cfg.seed, self.index) + 1)
        return self.train.batches(self.batch, gen)

    def snapshot(self, epoch: int) -> dict:
        """Weights as saved (exactly sparse for pruned models: pruned weights stored as zeros) and
        the masks of that moment (DPF masks still move between the target and freeze epochs)."""
        state = self.pruner.sparse_state_dict() if self.pruner else self.model.state_dict()
        masks = {k: v.detach().cpu().clone() for k, v in self.pruner.masks.items()} if self.pruner else {}
        return {"epoch": epoch, "state": _clone_state(state), "masks": masks}


def epoch_orders(seats: list[Seat]) -> list[torch.Tensor]:
    """Each model's data order for one epoch: a permutation of its own training set, drawn from its own
    generator (what DeviceData.batches() draws first)."""
    return [torch.randperm(len(m.train), device=m.train.x.device, generator=m.gen) for m in seats]


def pack_batches(seats: list[Seat], batch: int, iters: int, grouped: bool = True,
                 orders: list[torch.Tensor] | None = None, start: int = 0):
    """One epoch of a pack's training batches: (x, y [B, K]); x normalised, [B, K*C, H, W] with model k's
    images in channels k*C... when `grouped` (the packed network's input), else [K, B, C, H, W]. Each model
    draws from its own generator exactly what DeviceData.batches() draws alone (its permutation of its own
    set, then per batch its crop offsets and flips), so its stream is the one it has alone, cut to the
    configuration's `iters` batches; the gathers, the crop and the normalisation then run once for the
    whole pack (a few kernel launches per model, not a dozen). orders, start: the epoch's data orders
    (epoch_orders(), drawn here when None) and the first step: a run resumed inside an epoch continues it
    from its saved orders and generators."""
    data = [m.train for m in seats]
    orders = epoch_orders(seats) if orders is None else orders
    d0, k = data[0], len(seats)
    for i in range(start, iters):
        idx = [o[i * batch:(i + 1) * batch] for o in orders]
        draws = [d.draw_crops(batch, m.gen) for d, m in zip(data, seats)]
        x = torch.cat([d.x[j] for d, j in zip(data, idx)]) if k > 1 else d0.x[idx[0]]  # [K*B, C, H, W] uint8
        dy, dx, flip = (None if t[0] is None else torch.cat(t) if k > 1 else t[0] for t in zip(*draws))
        x = d0.normalize(d0.crop(x, dy, dx, flip))
        y = torch.stack([d.y[j] for d, j in zip(data, idx)], 1)  # [B, K]
        x = x.view(k, batch, *x.shape[1:])
        if grouped:
            x = x.transpose(0, 1).reshape(batch, -1, *x.shape[3:])
        yield x, y


class StopRequested(Exception):
    """Trainer.fit stopped at a step boundary because a stop was asked for (stop_requested: SIGTERM):
    state_dict() is the state there (epoch: epochs done; step: steps done in the next one)."""

    def __init__(self, epoch: int, step: int):
        super().__init__(f"epoch {epoch}, step {step}")
        self.epoch, self.step = epoch, step


@contextlib.contextmanager
def stop_on_sigterm(tr: "Trainer"):
    """For the training loop only: SIGTERM (a scheduler's preemption, sent some 30 s before the kill) sets
    tr.stop_requested, which the loop reads after every step (StopRequested); the previous handler is back
    after. A second SIGTERM while the state is written changes nothing (the handler only sets the flag; the
    write is atomic, utils/io). Signal handlers belong to the main thread: elsewhere nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # no I/O here: a print interrupted by a print raises (reentrant stdout)
        tr.stop_requested = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


CHECK_EVERY = 50  # steps between two looks at the finite flags (one host sync; every step's is on the device)


def weights_finite(model: torch.nn.Module) -> bool:
    """Every floating tensor of the model's state (weights, BatchNorm statistics) finite: one host sync. A
    tensor's float64 sum is finite exactly when its entries are (a NaN or an infinity propagates, inf - inf
    is NaN, and float32 values cannot overflow a float64 sum): one reduction per tensor, not a boolean copy."""
    sums = [t.sum(dtype=torch.float64) for t in itertools.chain(model.parameters(), model.buffers())
            if t.is_floating_point()]
    return bool(torch.stack(sums).isfinite().all()) if sums else True


def divergence_line(m: Seat, epoch: int, step: int | None, iters: int, what: str, precision: str) -> str:
    """The one line of a diverged model: which, where, the likely causes and the flag to change."""
    cfg = m.cfg
    finetunes = PRUNING_METHODS[cfg.method].finetunes
    flag = "--finetune-lr" if finetunes else "--lr"
    lr = cfg.finetune_lr if finetunes else cfg.lr
    causes = [f"a learning rate too high for {cfg.name} ({flag} {lr:g}: lower it)"]
    if precision in AUTOCAST_DTYPES:
        causes.append(f"a {precision} overflow (--no-amp)")
    if cfg.defense == "dp":
        causes.append("DP-SGD noise")
    where = f"epoch {epoch + 1}, step {step + 1}/{iters}" if step is not None else f"the end of epoch {epoch + 1}"
    return (f"{cfg.name} model {m.index} diverged at {where} ({what}); likely {' or '.join(causes)}; no "
            f"{paths.COMPLETE} marker; its last resumable state, if any, is kept for inspection")


class Trainer:
    """The models `indices` of one configuration (target and/or shadows) trained together for cfg.epochs,
    as one packed network when there are several (training/packing.py, docs/packing.md), each keeping
    its best eligible state. One model is the pack of one: the same loop, the model itself as the network.

    keep: the configuration's keep matrix bool [models, pool] (or one model's row [pool]); steps:
    (batch, iterations per epoch), by default from the smallest training set of `keep` (config_steps).
    dtype: the models' dtype (float64 in the packing tests; training runs in float32).
    init: model index -> state dict each model starts from (fine-tuning a trained model; default: its seed's
    initialisation); rewind: model index -> lth's rewind point (training/sources.load_rewind). cfg is the loop's
    config: for fine-tuning and iterative pruning, ExperimentConfig.fit_config().

    What other modules use: fit(), state_dict() / load_state_dict() (training/resume.py), seats (per model: index,
    seed, cfg, model, pruner, train, history, failed, source), cfg, device, batch, iters, indices, precision, mode,
    val, test; step hooks (training/hooks.py) may also read nets and opt, never replace them."""

    # the keys of state_dict()["shared"], the part every model of the pack shares (resume.py writes it in each file)
    SHARED = ("lr", "scheduler", "scaler", "torch_rng", "opt_rng", "cuda_rng")

    def __init__(self, cfg: ExperimentConfig, ds: ArrayDataset, keep: np.ndarray, indices=0,
                 steps: tuple[int, int] | None = None, dtype=None, init: dict[int, dict] | None = None,
                 rewind: dict[int, dict] | None = None):
        keep = np.asarray(keep, dtype=bool)
        indices = [indices] if isinstance(indices, int) else list(indices)
        rows = {i: (keep if keep.ndim == 1 else keep[i]) for i in indices}
        self.cfg, self.ds, self.indices = cfg, ds, indices
        self.device = resolve_device(cfg.device)
        configure_backends(self.device)
        self.precision = say_precision(cfg, self.device, dtype or torch.float32)
        self.batch, self.iters = steps or config_steps(keep, cfg.batch_size)
        init, rewind = init or {}, rewind or {}
        self.seats = [Seat(cfg, ds, rows[i], i, self.device, self.batch, self.iters, dtype, init.get(i),
                               rewind.get(i)) for i in indices]
        val_idx, test_idx = split_test(ds, cfg.val_fraction)  # one validation and test set for the pack
        self.val = DeviceData.build(ds.x_test[val_idx], ds.y_test[val_idx], ds, self.device)
        self.test = DeviceData.build(ds.x_test[test_idx], ds.y_test[test_idx], ds, self.device)
        models = [m.model for m in self.seats]
        pruners = [m.pruner for m in self.seats if m.pruner]
        # the networks a step runs: one (a lone model, or the K models packed as one), or the K models in turn
        self.mode = pack_mode(cfg, self.device, ds.x_train.shape, models[0]) if len(models) > 1 else None
        lists = None  # the pruning hook's tensors: the pruners' own, or a packed network's (tie_masks)
        if self.mode == "grouped":
            fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
            self.nets = [pack_models(models, memory_format=fmt)]
            lists = tie_masks(pruners, self.nets[0]) if pruners else None
        else:  # a lone model is the pack of one: the model is the network
            self.nets = models
        self.step_models = [torch.compile(n) if cfg.compile else n for n in self.nets]
        self.opt = torch.optim.SGD([p for n in self.nets for p in n.parameters()], lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=cfg.milestones, gamma=cfg.gamma)
        self.scaler = grad_scaler(cfg, self.device)
        for j, pr in enumerate(pruners):  # rigl, set read their gradients and momentum through the pack's parts
            pr.slot = functools.partial(self.parts, j)
        self.loss = build_loss(cfg)  # the defense's training loss (defenses/): mean cross-entropy undefended
        # the step hooks (training/hooks.py), in order: the pruning method's, then the defense's (dp: DP-SGD's
        # per-example clipping and noise, which masks the per-example gradients by the pruner's masks)
        self.hooks = StepHooks([PruningHook(pruners, lists) if pruners else None, prepare_loop(self)])
        wrapped = self.hooks.step_network(self.nets[0]) if len(self.nets) == 1 else None
        if wrapped is not None:  # dp: Opacus's per-example gradients (one model at a time)
            self.step_models = [wrapped]
        # where training is (state_dict): epochs done, the epoch in progress (train_epoch), a stop asked for
        self.epochs_done, self.in_epoch, self.stop_requested = 0, None, False

    # one model (benchmarks, the pack of one)
    @property
    def model(self) -> torch.nn.Module:
        return self.seats[0].model

    @property
    def train(self) -> DeviceData:
        return self.seats[0].train

    @property
    def pruner(self):
        return self.seats[0].pruner

    def parts(self, j: int, kind: str) -> list:
        """Model j's part of each of its prunable weights' gradient ('grad') or SGD momentum ('momentum'; None
        before the first step), as slots() slices a pack's tensors (model j: the j-th model with a pruner,
        which in a pruned configuration is every model)."""
        found = {}
        for p, parts in self.slots():
            t = p.grad if kind == "grad" else self.opt.state.get(p, {}).get("momentum_buffer")
            if t is not None:
                found.update({name: v for jj, name, v in parts(t) if jj == j})
        return [found.get(n) for n in self.seats[j].pruner.names]

    def slots(self):
        """(optimizer parameter P, parts): parts(t) = [(model j, parameter name, t's part for model j)] for a
        tensor t shaped like P (its momentum). A lone model's and a sequential pack's parameters are the models'
        own; a packed network's are sliced per model as pack_models sliced them."""
        if self.mode == "grouped":
            net, k = self.nets[0], len(self.seats)
            for name, p in net.named_parameters():
                yield p, (lambda t, name=name: [(j, name, v) for j, v in enumerate(model_slices(net, name, t, k))])
        else:
            for j, m in enumerate(self.seats):
                for name, p in m.model.named_parameters():
                    yield p, (lambda t, j=j, name=name: [(j, name, t)])

    def state_dict(self) -> dict:
        """Everything the next step depends on, at a step boundary (CPU tensors): {"epoch": epochs done,
        "step": steps done in the epoch in progress (0 between epochs), "shared": the optimizer's learning
        rates, the scheduler's and GradScaler's states and the random streams all models draw from (torch's
        global one: dropout; the optimizer's own: DP-SGD's noise; CUDA's), "seats": per model, its weights
        and BatchNorm statistics, its SGD momentum (its part of a packed network's), its pruner's state, its
        generator (data order, crops, flips), history, best snapshot and key and, inside an epoch, "in_epoch":
        its data order for the epoch and its running loss, correct count and first non-finite step}. Per
        model, so a model's state continues it in whatever pack a rerun puts it (training/resume.py writes
        one file per model)."""
        momentum = [{} for _ in self.seats]
        for p, parts in self.slots():
            buf = self.opt.state[p].get("momentum_buffer") if p in self.opt.state else None
            for j, name, v in parts(buf) if buf is not None else []:
                momentum[j][name] = _cpu(v)
        cuda, gen = self.device.type == "cuda", self.hooks.generator  # DP-SGD's noise: not restarted on resume
        shared = {"lr": [g["lr"] for g in self.opt.param_groups], "scheduler": self.sched.state_dict(),
                  "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
                  "opt_rng": None if gen is None else gen.get_state(),
                  "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None}
        run = self.in_epoch
        seats = []
        for j, (m, mom) in enumerate(zip(self.seats, momentum)):
            best = None if m.best is None else {**m.best, "state": {k: _cpu(v) for k, v in m.best["state"].items()}}
            in_epoch = None if run is None else {
                "order": _cpu(run["orders"][j]), "seen": run["seen"], "loss_sum": _cpu(run["loss_sum"][j]),
                "correct": _cpu(run["correct"][j]), "first_bad": _cpu(run["first_bad"][j])}
            seats.append({"model": {k: _cpu(v) for k, v in m.model.state_dict().items()}, "momentum": mom,
                            "pruner": m.pruner.state_dict() if m.pruner else None, "model_rng": m.gen.get_state(),
                            "history": m.history, "best": best,
                            "best_key": None if m.best_key is None else list(m.best_key), "in_epoch": in_epoch})
        return {"epoch": self.epochs_done, "step": 0 if run is None else run["step"], "shared": shared,
                "seats": seats}

    def load_state_dict(self, state: dict) -> None:
        """Continue from state_dict()'s state (its "seats" in this pack's order; a state written between
        epochs has no "in_epoch"). In place: a packed network's models hold slices of its tensors."""
        for m, st in zip(self.seats, state["seats"]):
            m.model.load_state_dict(st["model"])
            if m.pruner:
                m.pruner.load_state_dict(st["pruner"])
            m.gen.set_state(st["model_rng"])
            m.history, m.best = st["history"], st["best"]
            m.best_key = None if st["best_key"] is None else tuple(st["best_key"])
        for p, parts in self.slots():
            buf = torch.empty_like(p)
            got = [(v, state["seats"][j]["momentum"].get(name)) for j, name, v in parts(buf)]
            if all(saved is not None for _, saved in got):  # a parameter never stepped has no momentum yet
                for v, saved in got:
                    v.copy_(saved)
                self.opt.state[p]["momentum_buffer"] = buf
        shared, gen = state["shared"], self.hooks.generator
        for g, lr in zip(self.opt.param_groups, shared["lr"]):
            g["lr"] = lr
        self.sched.load_state_dict(shared["scheduler"])
        if shared["scaler"]:  # empty where no GradScaler runs (every precision but fp16)
            self.scaler.load_state_dict(shared["scaler"])
        torch.set_rng_state(shared["torch_rng"])
        if shared.get("opt_rng") is not None and gen is not None:
            gen.set_state(shared["opt_rng"])
        if shared["cuda_rng"] is not None:
            torch.cuda.set_rng_state(shared["cuda_rng"], self.device)
        self.epochs_done, self.in_epoch = state["epoch"], None
        runs = [st.get("in_epoch") for st in state["seats"]]
        if state.get("step") and all(runs):
            dev = lambda key, dtype: torch.stack([r[key] for r in runs]).to(self.device, dtype)  # noqa: E731
            self.in_epoch = {"orders": [r["order"].to(self.device) for r in runs], "step": state["step"],
                             "seen": runs[0]["seen"], "loss_sum": dev("loss_sum", torch.float64),
                             "correct": dev("correct", torch.long), "first_bad": dev("first_bad", torch.long)}

    def _forward_backward(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Every model's forward and backward on its batch: (logits [B, K, classes], loss per model [K], the
        defense's loss: mean cross-entropy undefended; RelaxLoss reads the epoch). The gradients are each
        model's own: one network's loss is the sum of its models' losses."""
        dtype, outs, losses = param_dtype(self.nets[0]), [], []
        # one network: all its models at once; sequential: model j's images [B, C, H, W] and labels [B, 1]
        batches = [(xb, yb)] if len(self.nets) == 1 else zip(xb, yb.T[:, :, None])
        for net, (x, y) in zip(self.step_models, batches):
            with autocast(self.cfg, self.device, dtype):
                out = net(x.to(dtype)).view(len(y), -1, self.ds.num_classes)  # [B, models of this net, classes]
                logits = out.to(torch.promote_types(out.dtype, torch.float32))  # bf16/fp16 -> fp32
                loss = self.loss(logits, y, epoch)  # [models of this net]
            self.scaler.scale(loss.sum()).backward()
            outs.append(out)
            losses.append(loss.detach())
        return torch.cat(outs, 1), torch.cat(losses)

    def start_round(self, epoch: int) -> None:
        """imp, lth: at a round's first epoch each model is pruned further (and lth's rewound: Pruner.start_round),
        and the round trains as a fresh run of its recipe: the learning rate back to the loop's first rate (its
        later decays are the loop's milestones: pruning/iterative.round_schedule) and no momentum."""
        started = [m.pruner.start_round(epoch) for m in self.seats if m.pruner]
        if any(started):
            for g in self.opt.param_groups:
                g["lr"] = self.cfg.lr
            self.opt.state.clear()

    def train_epoch(self, epoch: int, bar) -> tuple[list[float], list[float], int]:
        """One epoch of every model: (mean loss per model, accuracy per model, images per model). A model
        whose training loss is not finite at a step is marked failed (Seat.failed, naming that step): the
        flag is kept on the device and read every CHECK_EVERY steps and at the end (no per-step sync); the
        epoch stops early once every model of the pack has failed, the others train on (a model's NaNs
        stay in its own slices of a packed network). The epoch in progress (its data orders, the steps done
        and its running sums) is self.in_epoch, part of state_dict(): a run resumed inside the epoch
        (load_state_dict) continues it at its next step. With stop_requested set (SIGTERM: stop_on_sigterm),
        it raises StopRequested after the step in progress, the state at that step boundary."""
        for net in self.nets:
            net.train()
        k = len(self.seats)
        if self.in_epoch is None:  # a new epoch; else the one a resumed state was inside
            self.in_epoch = {"orders": epoch_orders(self.seats), "step": 0, "seen": 0,
                             "loss_sum": torch.zeros(k, device=self.device, dtype=torch.float64),  # on device:
                             "correct": torch.zeros(k, device=self.device, dtype=torch.long),      # no per-step sync
                             # per model: its first non-finite step (iters: none)
                             "first_bad": torch.full((k,), self.iters, device=self.device, dtype=torch.long)}
        run = self.in_epoch
        bar.update(run["step"])
        batches = pack_batches(self.seats, self.batch, self.iters, len(self.nets) == 1, run["orders"], run["step"])
        for i, (xb, yb) in enumerate(batches, start=run["step"]):
            it = epoch * self.iters + i
            self.hooks.before_step(it)
            self.opt.zero_grad(set_to_none=True)
            out, losses = self._forward_backward(xb, yb, epoch)
            self.scaler.unscale_(self.opt)  # fp16: the hooks see true gradients (a no-op in other precisions)
            if self.hooks.after_backward():  # False: a hook vetoed the step (a RigL update replaced it)
                self.scaler.step(self.opt)
                self.scaler.update()
            elif self.scaler.is_enabled():  # no step: the scale stays as it is, ready for the next unscale_
                self.scaler.update(self.scaler.get_scale())
            self.hooks.after_optimizer_step()
            run["loss_sum"] += losses * len(yb)
            run["correct"] += (out.argmax(2) == yb).sum(0)
            run["first_bad"] = torch.minimum(run["first_bad"], torch.where(torch.isfinite(losses), self.iters, i))
            run["seen"] += len(yb)
            run["step"] = i + 1
            bar.update(1)
            if self.cfg.verbose:
                tqdm.write(f"models {self.indices} epoch {epoch + 1} iter {i + 1}/{self.iters} "
                           f"loss {' '.join(f'{v:.4f}' for v in losses.tolist())}")
            if (i + 1) % CHECK_EVERY == 0 and self._diverged(epoch, run["first_bad"]) and all(m.failed for m in self.seats):
                break
            if self.stop_requested and i + 1 < self.iters:  # the epoch's last step: its end is the boundary
                self._diverged(epoch, run["first_bad"])
                raise StopRequested(epoch, i + 1)
        self.in_epoch = None
        self._diverged(epoch, run["first_bad"])
        seen = max(run["seen"], 1)
        return (run["loss_sum"] / seen).tolist(), (run["correct"].double() / seen).tolist(), run["seen"]

    def _diverged(self, epoch: int, first_bad: torch.Tensor) -> bool:
        """Mark the models whose loss was not finite at a step of this epoch (first_bad: per model, the first
        such step, or iters), one line each; True if any model of the pack has failed."""
        for m, step in zip(self.seats, first_bad.tolist()):
            if step < self.iters and not m.failed:
                self._fail(m, epoch, step, "non-finite training loss")
        return any(m.failed for m in self.seats)

    def _fail(self, m: Seat, epoch: int, step: int | None, what: str) -> None:
        m.failed = divergence_line(m, epoch, step, self.iters, what, self.precision)
        tqdm.write(f"error: {m.failed}")

    def fit(self, after_epoch=None) -> list[dict]:
        """Train every model from where it is (self.epochs_done and self.in_epoch: the start, or what a
        resumed state holds, load_state_dict) to cfg.epochs; after_epoch(epochs_done), when given, runs at
        each epoch's end (the resumable state is written there). Per model: history, best and last
        snapshots, timings; or, for a model whose numbers stopped being finite (a loss at a step, its weights
        at an epoch's end), {"failed": its line}: it is dropped from evaluation, snapshots and resumable states
        from then on, the pack's other models train to the end (the loop stops early when all have failed).
        With stop_requested set, raises StopRequested at the next step boundary (train_epoch) or epoch end."""
        cfg = self.cfg
        t0, train_time, images = time.time(), 0.0, 0
        who = f"#{self.indices[0]}" if len(self.indices) == 1 else f"#{','.join(map(str, self.indices))} packed"
        for m in self.seats:  # snip, synflow: the mask at initialisation (a no-op for a resumed model)
            if m.pruner:
                m.pruner.at_init(m.init_batches(self.device))
        for epoch in range(self.epochs_done, cfg.epochs):
            if self.in_epoch is None:  # a round starts at an epoch's start, never inside a resumed epoch
                self.start_round(epoch)
            lr = self.opt.param_groups[0]["lr"]
            with tqdm(total=self.iters, desc=f"[{cfg.name} {who}] epoch {epoch + 1}/{cfg.epochs}",
                      leave=False, disable=None, dynamic_ncols=True) as bar:
                te = time.time()
                losses, accs, seen = self.train_epoch(epoch, bar)
                train_time += time.time() - te
                images += seen
            self.sched.step()
            validated = cfg.validated(epoch + 1)  # --val-from / --val-every: only these epochs can be selected
            # a finite loss with non-finite weights (a BatchNorm statistic overflowed): one look per network (a
            # packed network holds its models' tensors), each model's only when its network's is not finite
            if not all(weights_finite(n) for n in self.nets):
                for m in self.seats:
                    if not m.failed and not weights_finite(m.model):
                        self._fail(m, epoch, None, "non-finite weights")
            for m, loss, acc in zip(self.seats, losses, accs):
                if m.failed:  # no history, no snapshot: nothing of it is a result
                    continue
                val_loss, val_acc = evaluate(m.model, self.val, cfg, self.device) if validated else (None, None)
                row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss, "train_acc": acc,
                       "val_loss": val_loss, "val_acc": val_acc}
                if m.pruner:
                    row.update(m.pruner.end_epoch(epoch))
                m.history.append(row)
                # Only models at their target sparsity are eligible (a DPF model at epoch 40 is not 90% sparse).
                eligible = validated and (m.pruner is None or m.pruner.at_target(epoch))
                key = (val_acc, -val_loss) if validated else None
                if eligible and (m.best_key is None or key > m.best_key):
                    m.best_key, m.best = key, m.snapshot(epoch + 1)
            self.epochs_done = epoch + 1
            if all(m.failed for m in self.seats):
                break
            if after_epoch:
                after_epoch(epoch + 1)
            if self.stop_requested:
                raise StopRequested(epoch + 1, 0)
        results = []
        for m in self.seats:
            if m.failed:
                results.append({"failed": m.failed})
                continue
            last = m.snapshot(cfg.epochs)
            results.append({"history": m.history, "best": m.best or last, "last": last,
                            "wall_time_s": time.time() - t0, "images_per_s": images / max(train_time, 1e-9)})
        if self.mode == "grouped":  # each model a normal model again; the packed tensors can go
            unpack([m.model for m in self.seats])
            self.nets = self.step_models = self.opt = None
            self.hooks = StepHooks([])
        return results

    
def train_models(cfg: ExperimentConfig, ds: ArrayDataset, keep: np.ndarray, indices: list[int],
                 out_dirs: list[Path], steps: tuple[int, int] | None = None,
                 sources: dict[int, tuple[dict, dict]] | None = None,
                 rewinds: dict[int, dict] | None = None) -> list[tuple[dict, torch.nn.Module]]:
    """Train models `indices` (pool[keep[i]] each), packed when several; write each one's checkpoints and
    summary into its out_dir, as a model trained alone. keep: the configuration's keep matrix.
    sources: model index -> (state dict, provenance) of the trained model it is fine-tuned from
    (training/sources.load_source); the loop then runs the fine-tuning schedule (cfg.fit_config()).
    rewinds: model index -> lth's rewind point (training/sources.load_rewind). A dense run keeps its own rewind
    points (RewindKeeper).
    Returns (summary, selected model as saved, eval mode) per model, or a DivergenceError for a model that
    diverged (nothing of it written; its last resumable state stays). Signals and the COMPLETE marker are
    written by the caller."""
    sources = sources or {}
    tr = Trainer(cfg.fit_config(), ds, keep, indices, steps, init={i: s for i, (s, _) in sources.items()},
                 rewind=rewinds)
    for m in tr.seats:  # each checkpoint's config names its model (the run's config, not the loop's)
        m.cfg = dataclasses.replace(cfg, model_index=m.index)
        m.source = sources.get(m.index, (None, None))[1]  # what it is fine-tuned from: its resumable state checks it
    # a killed run's models continue from their resumable states (run_pack removed them unless --skip-existing)
    resume.restore(tr, out_dirs)
    checkpointer = resume.Checkpointer(tr, out_dirs, cfg.checkpoint_every)
    after_epoch = checkpointer
    if not PRUNING_METHODS[cfg.method].prunes:  # a dense run keeps the rewind points of the lottery tickets made from it
        keeper = RewindKeeper(tr, out_dirs)
        if tr.epochs_done == 0 and tr.in_epoch is None:  # a resumed run's first part kept epoch 0
            keeper(0)

        def after_epoch(done):
            keeper(done)
            checkpointer(done)
    with stop_on_sigterm(tr):  # SIGTERM: the state at the next step boundary, then Preempted
        try:
            results = tr.fit(after_epoch)
        except StopRequested as stop:
            resume.save(tr, out_dirs)
            where = f"after epoch {stop.epoch}" if stop.step == 0 else \
                f"at epoch {stop.epoch + 1}, step {stop.step}/{tr.iters}"
            states = ", ".join(str(Path(d) / paths.RESUME) for d in out_dirs)
            raise Preempted(f"SIGTERM: {cfg.name} model(s) {', '.join(map(str, tr.indices))} stopped {where} "
                            f"of {cfg.epochs} epochs, resumable state written ({states})") from None
    out = []
    for m, res, out_dir in zip(tr.seats, results, out_dirs):
        if "failed" in res:
            out.append(DivergenceError(res["failed"]))
            continue
        out.append(write_model(tr, m, res, Path(out_dir), sources.get(m.index, (None, None))[1]))
    return out
