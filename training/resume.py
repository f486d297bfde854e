"""Resume inside a model: a resumable state every --checkpoint-every epochs (docs/long_runs.md).

A model killed mid-run (a preemptible queue, a 200-epoch CPU run) loses only the epochs since its last
state: the same command rerun with --skip-existing continues from there and ends bitwise equal (CPU,
fp32) to a run never interrupted (tests/test_resume.py).

One file per model, resume.pth beside its checkpoints (configs/paths.RESUME), written atomically
(utils/io), removed once the model is COMPLETE and at the start of a run without --skip-existing
(training/experiment.run_pack). It holds everything the next epoch depends on:
  weights, BatchNorm statistics   the model's state_dict (a pruned model's weights as w * m)
  optimizer, scheduler            the model's SGD momentum, the learning rate, the scheduler's and GradScaler's state
  pruner                          masks, DPF's dense weights, schedule position, counters (Pruner.state_dict)
  random streams                  the model's generator (data order, crops, flips), the optimizer's own where it
                                  draws one (DP-SGD's noise), torch's global stream (dropout) and CUDA's on a
                                  GPU; numpy's global stream is not used by training
  bookkeeping                     epochs done, history, the best-so-far snapshot and its key
and what made it: the state's format, the model's recipe (ExperimentConfig.recipe(): method revision
included), its index, its steps per epoch and, for a fine-tuned model, the source checkpoint it started from
(training/sources.py provenance: a state begun from a dense model since retrained is stale). A state that is unreadable (truncated), or of another format,
recipe, method revision, model or step count, is refused with one line, and the model trains from the start.

Per model, not per pack: a model's momentum is its own part of a packed network's (packing.model_slices), so
a state resumes in whatever pack the rerun puts the model (bitwise in the same pack and mode: a grouped
convolution sums in another order than a plain one). A pack resumes when all its models' states are at one
epoch, else it trains from the start (one line).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from tqdm import tqdm

from artifacts import paths
from configs.config import recipe_diff
from training.packing import model_slices
from utils.errors import UsageError
from utils.io import load_torch, save_torch

FORMAT = 1  # bumped when what a state holds changes: an older state is then refused, not misread
WRITE_SHARE = 0.05  # the default schedule writes when writing has taken at most this share of the time


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


def slots(tr):
    """(optimizer parameter P, parts): parts(t) = [(member j, parameter name, t's part for member j)] for a
    tensor t shaped like P (its momentum). A lone model's and a sequential pack's parameters are the models'
    own; a packed network's are sliced per model as pack_models sliced them."""
    if tr.mode == "grouped":
        net, k = tr.nets[0], len(tr.members)
        for name, p in net.named_parameters():
            yield p, (lambda t, name=name: [(j, name, v) for j, v in enumerate(model_slices(net, name, t, k))])
    else:
        for j, m in enumerate(tr.members):
            for name, p in m.model.named_parameters():
                yield p, (lambda t, j=j, name=name: [(j, name, t)])


def _opt_generator(tr) -> torch.Generator | None:
    """The optimizer's own random stream where it draws one (DP-SGD's noise, defenses/dp.py): restarted from
    its seed on resume, it would repeat the noise of the epochs already run."""
    return getattr(tr.opt, "generator", None)


def member_states(tr, epochs_done: int) -> list[dict]:
    """Each member's resumable state at the end of epoch `epochs_done` (module docstring). CPU tensors."""
    momentum = [{} for _ in tr.members]
    for p, parts in slots(tr):
        buf = tr.opt.state[p].get("momentum_buffer") if p in tr.opt.state else None
        for j, name, v in parts(buf) if buf is not None else []:
            momentum[j][name] = _cpu(v)
    cuda = tr.device.type == "cuda"
    shared = {"lr": [g["lr"] for g in tr.opt.param_groups], "scheduler": tr.sched.state_dict(),
              "scaler": tr.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
              "opt_rng": None if _opt_generator(tr) is None else _opt_generator(tr).get_state(),
              "cuda_rng": torch.cuda.get_rng_state(tr.device) if cuda else None}
    out = []
    for m, mom in zip(tr.members, momentum):
        best = None if m.best is None else {**m.best, "state": {k: _cpu(v) for k, v in m.best["state"].items()}}
        out.append({"format": FORMAT, "recipe": m.cfg.recipe(), "model_index": m.index, "source": m.source,
                    "steps": [tr.batch, tr.iters], "epoch": epochs_done,
                    "model": {k: _cpu(v) for k, v in m.model.state_dict().items()}, "momentum": mom,
                    "pruner": m.pruner.state_dict() if m.pruner else None, "model_rng": m.gen.get_state(),
                    "history": m.history, "best": best, "best_key": None if m.best_key is None else list(m.best_key),
                    **shared})
    return out


def save(tr, out_dirs: list[Path], epochs_done: int) -> None:
    """Every member's state, but a failed (diverged) member's: its last state before it failed stays for inspection."""
    for m, st, out in zip(tr.members, member_states(tr, epochs_done), out_dirs):
        if not m.failed:
            save_torch(st, Path(out) / paths.RESUME)


def _mismatch(st, tr, m) -> str | None:
    """Why a state cannot continue member m of trainer tr, or None."""

    if not isinstance(st, dict) or st.get("format") != FORMAT:
        got = st.get("format") if isinstance(st, dict) else None
        return f"format {got}, this code writes {FORMAT}"
    if st["model_index"] != m.index:
        return f"it is model {st['model_index']}'s"
    diff = recipe_diff(st["recipe"], m.cfg)
    if diff:
        return f"another recipe: {'; '.join(diff)}"
    if st.get("source") != m.source:  # a fine-tuned model's dense source retrained since: stale (training/sources.py)
        return "it continues a fine-tuning of another source checkpoint"
    if list(st["steps"]) != [tr.batch, tr.iters]:
        return f"(batch, steps per epoch) {tuple(st['steps'])} there vs {(tr.batch, tr.iters)} now"
    return None


def _read(tr, m, path: Path) -> dict | None:
    """The valid state at `path`, or None (absent; refused with one line)."""
    if not path.exists():
        return None
    try:
        st = load_torch(path)
        why = _mismatch(st, tr, m)
    except UsageError:
        why = "unreadable: truncated or corrupt"
    except (KeyError, TypeError) as e:
        why = f"incomplete ({type(e).__name__}: {e})"
    if why is None:
        return st
    tqdm.write(f"note: {path} refused ({why}); model {m.index} trains from the start")
    return None


def restore(tr, out_dirs: list[Path]) -> int:
    """Load every member's resumable state when all are valid and at one epoch; returns the epochs done
    (0: the pack trains from the start, as built)."""
    states = [_read(tr, m, Path(out) / paths.RESUME) for m, out in zip(tr.members, out_dirs)]
    if not any(states):
        return 0
    at = {m.index: st["epoch"] if st else None for m, st in zip(tr.members, states)}
    if len(set(at.values())) > 1:
        tqdm.write(f"note: the models of this pack have resumable states at different epochs ({at}, None: none); "
                   f"the pack trains from the start")
        return 0
    for m, st in zip(tr.members, states):
        m.model.load_state_dict(st["model"])  # in place: a packed network's models hold slices of its tensors
        if m.pruner:
            m.pruner.load_state_dict(st["pruner"])
        m.gen.set_state(st["model_rng"])
        m.history, m.best = st["history"], st["best"]
        m.best_key = None if st["best_key"] is None else tuple(st["best_key"])
    for p, parts in slots(tr):
        buf = torch.empty_like(p)
        got = [(v, states[j]["momentum"].get(name)) for j, name, v in parts(buf)]
        if all(saved is not None for _, saved in got):  # a parameter never stepped has no momentum yet
            for v, saved in got:
                v.copy_(saved)
            tr.opt.state[p]["momentum_buffer"] = buf
    first = states[0]
    for g, lr in zip(tr.opt.param_groups, first["lr"]):
        g["lr"] = lr
    tr.sched.load_state_dict(first["scheduler"])
    if first["scaler"]:  # empty where no GradScaler runs (every precision but fp16)
        tr.scaler.load_state_dict(first["scaler"])
    torch.set_rng_state(first["torch_rng"])
    if first.get("opt_rng") is not None and _opt_generator(tr) is not None:
        _opt_generator(tr).set_state(first["opt_rng"])
    if first["cuda_rng"] is not None:
        torch.cuda.set_rng_state(first["cuda_rng"], tr.device)
    done = first["epoch"]
    tqdm.write(f"resuming model(s) {', '.join(map(str, tr.indices))} after epoch {done} of {tr.cfg.epochs}")
    return done


class Checkpointer:
    """Trainer.fit's after_epoch: writes the pack's states every cfg.checkpoint_every epochs; by default after
    the first epoch, then as soon as the time since the last write is at least (1 - WRITE_SHARE) / WRITE_SHARE
    times what that write took (writing at most ~5% of the time, whatever a model's epoch costs: a 200-epoch
    CIFAR run writes after every epoch, a tiny digits pack every few); 0: never."""

    def __init__(self, tr, out_dirs: list[Path], every: int | None):
        self.tr, self.out_dirs, self.every = tr, out_dirs, every
        self.last_end, self.cost = None, 0.0

    def due(self, epochs_done: int) -> bool:
        if self.every is not None:
            return self.every > 0 and epochs_done % self.every == 0
        return self.last_end is None or \
            time.perf_counter() - self.last_end >= self.cost * (1 - WRITE_SHARE) / WRITE_SHARE

    def __call__(self, epochs_done: int) -> None:
        if self.due(epochs_done):
            t = time.perf_counter()
            save(self.tr, self.out_dirs, epochs_done)
            self.last_end = time.perf_counter()
            self.cost = self.last_end - t
