"""Resume inside a model: the trainer's state (Trainer.state_dict(), training/trainer.py) in one file per
model, written every --checkpoint-every epochs and at the step boundary after a SIGTERM (docs/long_runs.md).

A model killed mid-run (a preemptible queue, a 200-epoch CPU run) loses only the epochs since its last
state; one stopped by SIGTERM loses nothing: the same command rerun with --skip-existing continues from
there and ends bitwise equal (CPU, fp32) to a run never interrupted (tests/test_resume.py).

One file per model, resume.pth beside its checkpoints (artifacts/paths.RESUME), written atomically
(utils/io), removed once the model is COMPLETE and at the start of a run without --skip-existing
(training/experiment.run_pack). It holds the model's part of Trainer.state_dict() (weights, momentum,
pruner, random streams, history, best snapshot; inside an epoch the epoch's data order, steps done and
running sums), the position (epochs done, steps done in the next) and the shared part (learning rate,
scheduler, GradScaler, torch's and the optimizer's streams), and what made it: the state's format, the
model's recipe (ExperimentConfig.recipe(): method revision included), its index, its steps per epoch and,
for a fine-tuned model, the source checkpoint it started from (training/sources.py provenance: a state begun
from a dense model since retrained is stale). A state that is unreadable (truncated), or of another format,
recipe, method revision, model or step count, is refused with one line, and the model trains from the start.
Format 1 (written before states could be inside an epoch) is read as a state between epochs.

Per model, not per pack: a model's momentum is its own part of a packed network's (packing.model_slices), so
a state resumes in whatever pack the rerun puts the model (bitwise in the same pack and mode: a grouped
convolution sums in another order than a plain one). A pack resumes when all its models' states are at one
position (epoch and step), else it trains from the start (one line).
"""
from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from artifacts import paths
from configs.config import recipe_diff
from utils.errors import UsageError
from utils.io import load_torch, save_torch

FORMAT = 2  # bumped when what a state holds changes: an older state is then refused, not misread
READS = {1, FORMAT}  # 1: a state between epochs (no step, no epoch in progress), read as step 0
WRITE_SHARE = 0.05  # the default schedule writes when writing has taken at most this share of the time


# What this module reads of a Trainer (training/trainer.py): state_dict() / load_state_dict() and SHARED (the keys
# of the state's shared part), batch, iters, indices, cfg, and per seat its index, cfg (the model's recipe), source
# (what a fine-tuned model starts from) and failed (a diverged model's line).


def save(tr, out_dirs: list[Path]) -> None:
    """Every model's state (Trainer.state_dict()), but a failed (diverged) model's: its last state
    before it failed stays for inspection."""
    state = tr.state_dict()
    made = {"format": FORMAT, "steps": [tr.batch, tr.iters], "epoch": state["epoch"], "step": state["step"],
            **state["shared"]}
    for m, st, out in zip(tr.seats, state["seats"], out_dirs):
        if not m.failed:
            save_torch({**made, "recipe": m.cfg.recipe(), "model_index": m.index, "source": m.source, **st},
                       Path(out) / paths.RESUME)


def _mismatch(st, tr, m) -> str | None:
    """Why a state cannot continue seat m of trainer tr, or None."""

    if not isinstance(st, dict) or st.get("format") not in READS:
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
    """Load every model's resumable state (Trainer.load_state_dict) when all are valid and at one position;
    returns the epochs done (0, nothing loaded: the pack trains from the start, as built)."""
    states = [_read(tr, m, Path(out) / paths.RESUME) for m, out in zip(tr.seats, out_dirs)]
    if not any(states):
        return 0
    at = {m.index: (st["epoch"], st.get("step", 0)) if st else None for m, st in zip(tr.seats, states)}
    if len(set(at.values())) > 1:
        tqdm.write(f"note: the models of this pack have resumable states at different positions ({at}: "
                   f"(epoch, step), None: none); the pack trains from the start")
        return 0
    epoch, step = at[tr.seats[0].index]
    tr.load_state_dict({"epoch": epoch, "step": step, "shared": {k: states[0].get(k) for k in tr.SHARED},
                        "seats": states})
    where = f"after epoch {epoch}" if step == 0 else f"at epoch {epoch + 1}, step {step}/{tr.iters},"
    tqdm.write(f"resuming model(s) {', '.join(map(str, tr.indices))} {where} of {tr.cfg.epochs}")
    return epoch


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
            save(self.tr, self.out_dirs)
            self.last_end = time.perf_counter()
            self.cost = self.last_end - t
