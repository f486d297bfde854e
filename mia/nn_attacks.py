"""Learned attacks (docs/attacks.md, "Learned attacks"): an attack model trained on shadow outputs labelled
IN/OUT, then applied to the target. One training routine and one calibration for all:

- Posterior = softmax of the identity query (query 0): the plain prediction the original attacks see.
- Shadow rows (shadow s, example n) come from balanced_shadows (the same number of IN and of OUT
  shadows for every example, so the rows say nothing about the target's membership).
- Cross-fitting: the examples (per class for Shokri-NN) are split into nn_folds seeded folds. Fold
  f's model trains on shadow rows of the other folds' examples only, early-stops on the rows of a
  held-out part of those (nn_val_fraction, at least nn_min_val_rows rows), and scores fold f: the
  target's rows and, for the threshold, fold f's own shadow rows. So no example is scored by a model
  that saw its shadow rows, and the threshold is taken on rows scored exactly as the target's are
  (one threshold from every fold's out-of-fold rows, balanced IN/OUT; per class for Shokri-NN).
  The target's membership is never used.
- Training rows: balanced IN/OUT, capped at nn_max_train_rows per model (samia_max_train_rows for
  SAMIA; per-class models cap / C, at least nn_min_class_rows), so one configuration's attacks fit
  in minutes on a CPU.
- Adam lr 1e-3 by default (mia_prune's SGD lr 1e-3 needs ~100 epochs): `nn_optimizer="sgd"`
  restores SGD lr 1e-3, momentum 0.9, weight decay 5e-4 and mia_prune's lr x0.1 at epochs 50 and 75.
  Mini-batches of 128, at most 100 epochs (SAMIA 30), early stopping after nn_patience epochs
  without a better validation loss; the best weights are kept. Seeded by AttackSettings.seed; runs
  on AttackSettings.device.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import softmax

from mia.shadows import AttackInput, AttackOutput, AttackSettings, balanced_shadows, require_shadows, rng_for
from mia.metrics import group_thresholds
from utils.errors import UsageError

# -- attack models ------------------------------------------------------------------------------


def mlp(d_in: int, hidden=(512, 256, 128), dropout: float = 0.2) -> nn.Sequential:
    """mia_prune / WeMeM 'nn': in -> 512 -> 256 -> 128 -> 2, ReLU, dropout 0.2 after every hidden
    layer but the last (mia_prune has none between the 128 units and the output)."""
    layers, d = [], d_in
    for i, h in enumerate(hidden):
        layers += [nn.Linear(d, h), nn.ReLU()] + ([nn.Dropout(dropout)] if i < len(hidden) - 1 else [])
        d = h
    return nn.Sequential(*layers, nn.Linear(d, 2))


class SAMIA(nn.Module):
    """Yuan & Zhang (mia_prune transformer.py): BatchNorm over the 3C inputs, one token
    (p_c, sens_c, onehot_c) per class -> Linear(3 -> 64) + GELU -> Transformer encoder (3 layers,
    d 64, 4 heads, ff 128, dropout 0.2, GELU) -> Linear(64 C -> 64) + ReLU -> Linear(64 -> 2)."""

    def __init__(self, num_classes: int, d: int = 64):
        super().__init__()
        self.bn = nn.BatchNorm1d(3 * num_classes)
        self.embed = nn.Linear(3, d)
        layer = nn.TransformerEncoderLayer(d, 4, 128, dropout=0.2, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d * num_classes, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [B, C, 3]
        b, c, _ = tokens.shape
        x = self.bn(tokens.transpose(1, 2).reshape(b, 3 * c)).reshape(b, 3, c).transpose(1, 2)
        return self.head(self.encoder(F.gelu(self.embed(x))).flatten(1))


# -- features of rows: (posterior [R, C], label [R], sensitivity [R, C] | None) -> [R, ...] -------

def onehot(y: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c, dtype=np.float32)[y]


def posterior_features(p, y, sens):
    return p


def top3_features(p, y, sens):
    return -np.sort(-p, axis=-1)[:, :3]


def posterior_label_features(p, y, sens):
    return np.concatenate([p, onehot(y, p.shape[1])], axis=1)


def samia_tokens(p, y, sens):
    return np.stack([p, sens.astype(np.float32), onehot(y, p.shape[1])], axis=-1)  # [R, C, 3]


def posteriors(logits: np.ndarray) -> np.ndarray:
    """softmax of query 0 in float64, returned as float32 [R, C]."""
    return softmax(np.asarray(logits[:, 0], np.float64), axis=-1).astype(np.float32)


def gather(stack: Sequence[np.ndarray], s_idx: np.ndarray, n_idx: np.ndarray) -> np.ndarray:
    """Rows stack[s][n] for pairs (s, n), one read per model (memory-mapped stacks stay on disk)."""
    first = np.asarray(stack[0][:1])
    out = np.empty((len(s_idx),) + first.shape[1:], first.dtype)
    for s in np.unique(s_idx):
        rows = s_idx == s
        out[rows] = stack[s][n_idx[rows]]
    return out


class Rows(NamedTuple):
    """Shadow rows: shadow index, example index, IN label (one entry per row)."""
    s: np.ndarray
    n: np.ndarray
    is_in: np.ndarray


def sample_rows(sel_in: np.ndarray, sel_out: np.ndarray, cols: np.ndarray, cap: int, rng) -> Rows:
    """(shadow, example) pairs drawn uniformly from the IN rows sel_in [S, N] and the OUT rows sel_out
    (balanced_shadows: the same count per example) of examples `cols`: at most cap // 2 of each."""
    ins, outs = np.flatnonzero(sel_in[:, cols]), np.flatnonzero(sel_out[:, cols])
    k = min(len(ins), len(outs), cap // 2)
    flat = np.concatenate([rng.choice(ins, k, replace=False), rng.choice(outs, k, replace=False)])
    s_idx, j = np.unravel_index(flat, (len(sel_in), len(cols)))
    return Rows(s_idx, cols[j], np.r_[np.ones(k, bool), np.zeros(k, bool)])


# -- cross-fitting: which examples' rows each model trains on, early-stops on, and scores -----------

@dataclass(frozen=True)
class Fold:
    """One model's examples. It trains on `train`'s shadow rows, early-stops on `stop`'s (both from
    the other folds) and scores `scored`: their target rows, and their shadow rows for the threshold."""
    scored: np.ndarray
    train: np.ndarray
    stop: np.ndarray


def split_examples(cols: np.ndarray, fraction: float, min_count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out examples of one pool: fraction of them held out, at least min_count
    (small classes: enough rows for a stable validation loss) but at most half, and one at least."""
    perm = rng.permutation(cols)
    n = len(cols)
    n_val = max(1, min(max(round(fraction * n), min_count), n // 2)) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def cross_fit_folds(cols: np.ndarray, k: int, stop_fraction: float, min_stop: int, rng_folds, rng) -> list[Fold]:
    """k folds of the examples `cols` (fewer when there are fewer examples), drawn at random. Each
    fold's model learns from the other folds only, so every example is scored by a model that never
    saw its shadow rows: the attack cannot memorise examples, and the threshold (taken on scored
    shadow rows) sees the same distribution as the target's scores."""
    perm = rng_folds.permutation(cols)
    folds = []
    for f in range(min(k, len(cols))):
        scored = np.sort(perm[f::k])
        train, stop = split_examples(np.setdiff1d(cols, scored), stop_fraction, min_stop, rng)
        folds.append(Fold(scored, train, stop))
    return folds


# -- the one training routine -----------------------------------------------------------------------

@contextmanager
def torch_threads(device: str, n: int):
    """Fewer intra-op threads on CPU while training small models (restored afterwards)."""
    old = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _batches(n: int, size: int, gen: torch.Generator):
    """Index batches of one epoch. The permutation is drawn on gen's device: on CUDA a CPU
    permutation would be copied to the device every batch (a host sync per step)."""
    order = torch.randperm(n, generator=gen, device=gen.device)
    for i in range(0, n, size):
        if n - i >= 2:  # never a batch of one (BatchNorm in training mode)
            yield order[i:i + size]


SGD_MILESTONES = (50, 75)  # mia_prune: lr x0.1 at these epochs


def _adam(model: nn.Module, st: AttackSettings):
    # fused: one kernel per step for all parameters (CPU and CUDA): ~40% less optimizer time here
    return torch.optim.Adam(model.parameters(), lr=st.nn_lr, fused=True), None


def _sgd(model: nn.Module, st: AttackSettings):
    opt = torch.optim.SGD(model.parameters(), lr=st.nn_lr, momentum=st.nn_momentum, weight_decay=st.nn_weight_decay)
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(SGD_MILESTONES), gamma=0.1)


# nn_optimizer -> (model, settings) -> (optimizer, per-epoch lr scheduler or None)
OPTIMIZERS = {"adam": _adam, "sgd": _sgd}


def _optimizer(model: nn.Module, st: AttackSettings):
    if st.nn_optimizer not in OPTIMIZERS:
        raise UsageError(f"nn_optimizer {st.nn_optimizer!r}: valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[st.nn_optimizer](model, st)


@torch.no_grad()
def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 512) -> float:
    model.eval()
    total = sum(F.cross_entropy(model(x[i:i + bs]), y[i:i + bs], reduction="sum") for i in range(0, len(x), bs))
    return float(total) / max(1, len(x))  # one host sync per epoch


def train_attack_model(model: nn.Module, x_tr, y_tr, x_val, y_val, st: AttackSettings, max_epochs: int) -> dict:
    """Seeded mini-batch training with early stopping on the validation loss; restores the best weights.
    Returns epochs run, best validation loss, training rows and the lr of each epoch."""
    dev = torch.device(st.device)
    model.to(dev)
    opt, sched = _optimizer(model, st)
    xt, yt = torch.as_tensor(x_tr, device=dev), torch.as_tensor(y_tr, dtype=torch.long, device=dev)
    xv, yv = torch.as_tensor(x_val, device=dev), torch.as_tensor(y_val, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(st.seed)
    best, best_state, bad, epochs, lrs = np.inf, copy.deepcopy(model.state_dict()), 0, 0, []
    for epochs in range(1, max_epochs + 1):
        model.train()
        lrs.append(opt.param_groups[0]["lr"])
        for idx in _batches(len(xt), st.nn_batch_size, gen):
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
        val = _mean_loss(model, xv, yv)
        if val < best - 1e-4:
            best, best_state, bad = val, copy.deepcopy(model.state_dict()), 0
        elif (bad := bad + 1) >= st.nn_patience:
            break
    model.load_state_dict(best_state)
    return {"epochs": epochs, "val_loss": float(best), "train_rows": len(xt), "lrs": lrs}


@torch.no_grad()
def member_margin(model: nn.Module, x: np.ndarray, device: str, bs: int = 512) -> np.ndarray:
    """Score = logit(member) - logit(non-member): monotone in the member probability, no saturation."""
    model.eval()
    out = [model(torch.as_tensor(x[i:i + bs], device=device)).double().cpu().numpy() for i in range(0, len(x), bs)]
    o = np.concatenate(out)
    return o[:, 1] - o[:, 0]


# -- attacks ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Learned:
    title: str
    features: Callable                      # (posterior, label, sensitivity) -> features
    make_model: Callable[[tuple, int], nn.Module]  # (feature shape, num classes) -> model
    per_class: bool = False                 # Shokri: one model (and threshold) per class
    samia: bool = False                     # needs sensitivity; SAMIA's own row and epoch caps


def _row_features(a: Learned, inp: AttackInput, stack, sens_stack, s_idx, n_idx) -> np.ndarray:
    p = posteriors(gather(stack, s_idx, n_idx))
    sens = gather(sens_stack, s_idx, n_idx) if a.samia else None
    return a.features(p, inp.labels[n_idx], sens)


def _shadow_features(a: Learned, inp: AttackInput, rows: Rows) -> np.ndarray:
    return _row_features(a, inp, inp.shadow_logits, inp.shadow_sens, rows.s, rows.n)


class Caps(NamedTuple):
    """Row caps of one group (a class for Shokri-NN): per model for training and early stopping,
    over all the group's folds for the threshold."""
    train: int
    val: int


def _caps(a: Learned, st: AttackSettings, num_groups: int) -> Caps:
    train = st.samia_max_train_rows if a.samia else st.nn_max_train_rows
    if a.per_class:
        train = max(train // num_groups, st.nn_min_class_rows)
    return Caps(train, max(st.nn_max_val_rows // num_groups, st.nn_min_val_rows, 2))


def _fit_fold(a: Learned, inp: AttackInput, st: AttackSettings, fold: Fold, sel, caps: Caps, rng):
    """Train one fold's model on the rows of fold.train, early-stopping on those of fold.stop."""
    tr = sample_rows(*sel, fold.train, caps.train, rng)
    stop = sample_rows(*sel, fold.stop, caps.val, rng)
    x_tr = _shadow_features(a, inp, tr)
    model = a.make_model(x_tr.shape[1:], inp.num_classes)
    epochs = st.samia_max_epochs if a.samia else st.nn_max_epochs
    run = train_attack_model(model, x_tr, tr.is_in, _shadow_features(a, inp, stop), stop.is_in, st, epochs)
    return model, {**run, "stop_rows": len(stop.n)}


def learned_attack(a: Learned, inp: AttackInput, st: AttackSettings) -> AttackOutput:
    with torch_threads(st.device, st.nn_cpu_threads):
        return _learned_attack(a, inp, st)


def _learned_attack(a: Learned, inp: AttackInput, st: AttackSettings) -> AttackOutput:
    require_shadows(inp, a.title, need_in=True)
    torch.manual_seed(st.seed)  # model initialisation and dropout
    rng, rng_folds = rng_for(st.seed, "attack_rows"), rng_for(st.seed, "attack_folds")
    n = len(inp.labels)
    groups = inp.labels if a.per_class else np.zeros(n, int)
    num_groups = inp.num_classes if a.per_class else 1
    caps = _caps(a, st, num_groups)
    sel_in, sel_out, k_in, k_out = balanced_shadows(inp.shadow_keep, st.seed)
    min_stop = math.ceil(st.nn_min_val_rows / (2 * min(k_in, k_out)))  # examples giving nn_min_val_rows rows
    f_t = _row_features(a, inp, [inp.target_logits], [inp.target_sens], np.zeros(n, int), np.arange(n))
    s_t, cal_scores, cal_in, cal_groups, runs = np.zeros(n), [], [], [], []
    for g in range(num_groups):
        folds = cross_fit_folds(np.flatnonzero(groups == g), st.nn_folds, st.nn_val_fraction, min_stop, rng_folds, rng)
        for fold in folds:
            if len(fold.train) == 0:  # a group of one example: no other example to learn from (score 0)
                continue
            model, run = _fit_fold(a, inp, st, fold, (sel_in, sel_out), caps, rng)
            s_t[fold.scored] = member_margin(model, f_t[fold.scored], st.device)
            cal = sample_rows(sel_in, sel_out, fold.scored, max(caps.val // len(folds), 2), rng)
            cal_scores.append(member_margin(model, _shadow_features(a, inp, cal), st.device))
            cal_in.append(cal.is_in)
            cal_groups.append(np.full(len(cal.n), g))
            runs.append(run)
    # Fragile spot: one threshold (per class) and one ranking over several models assume their margins
    # share a scale; they do as far as the models are fitted alike (same task, rows, caps and seeds).
    thr = group_thresholds(np.concatenate(cal_scores), np.concatenate(cal_in), np.concatenate(cal_groups), num_groups)
    info = {"thresholds": thr.tolist(), "folds": st.nn_folds, "models": len(runs),
            "train_rows": sum(r["train_rows"] for r in runs), "stop_rows": sum(r["stop_rows"] for r in runs),
            "calibration_rows": int(sum(len(v) for v in cal_in)), "epochs": [r["epochs"] for r in runs],
            "val_loss": float(np.mean([r["val_loss"] for r in runs]))}
    how = f"out-of-fold shadow rows ({st.nn_folds}-fold cross-fitting: no model scores an example whose rows it saw)"
    return AttackOutput(s_t - thr[groups], 0.0, how, info)


def _mlp(shape, c):
    return mlp(int(np.prod(shape)))


def _samia(shape, c):
    return SAMIA(c)


SHOKRI = Learned("Shokri-NN", posterior_features, _mlp, per_class=True)
TOP3 = Learned("Top3-NN", top3_features, _mlp)
CLASS_LABEL = Learned("ClassLabel-NN", posterior_label_features, _mlp)
NEURAL_NETWORK = Learned("NN", posterior_features, _mlp)
SAMIA_ATTACK = Learned("SAMIA", samia_tokens, _samia, samia=True)


def shokri_nn(inp, st):
    return learned_attack(SHOKRI, inp, st)


def top3_nn(inp, st):
    return learned_attack(TOP3, inp, st)


def class_label_nn(inp, st):
    return learned_attack(CLASS_LABEL, inp, st)


def neural_network(inp, st):
    return learned_attack(NEURAL_NETWORK, inp, st)


def samia(inp, st):
    return learned_attack(SAMIA_ATTACK, inp, st)
