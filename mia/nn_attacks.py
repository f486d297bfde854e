"""Learned attacks (REFERENCE.md section 4): an attack model trained on shadow outputs labelled
IN/OUT, then applied to the target. One training routine and one calibration for all:

- Posterior = softmax of the identity query (query 0): the plain prediction the original attacks see.
- Shadow rows (shadow s, example n) come from balanced_shadows (the same number of IN and of OUT
  shadows for every example, so the rows say nothing about the target's membership).
- A seeded nn_val_fraction (15%) of the examples (per class for Shokri-NN) is held out: the attack
  model never trains on their rows; their shadow rows (at most nn_max_val_rows, balanced IN/OUT)
  drive early stopping and calibrate the decision threshold (per class for Shokri-NN). The target's
  membership is never used.
- Training rows: the other examples' shadow rows, balanced IN/OUT, capped at nn_max_train_rows
  (samia_max_train_rows for SAMIA; per-class models cap / C, at least nn_min_class_rows), so one
  configuration's attacks fit in minutes on a CPU.
- Adam lr 1e-3 by default (mia_prune's SGD lr 1e-3 needs ~100 epochs): `nn_optimizer="sgd"`
  restores SGD lr 1e-3, momentum 0.9, weight decay 5e-4. Mini-batches of 128, at most 100 epochs
  (SAMIA 30), early stopping after nn_patience epochs without a better validation loss; the best
  weights are kept. Seeded by AttackSettings.seed; runs on AttackSettings.device.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import softmax

from mia.attacks import AttackInput, AttackOutput, AttackSettings, balanced_shadows, require_shadows, rng_for
from mia.metrics import group_thresholds

# -- attack models ------------------------------------------------------------------------------


def mlp(d_in: int, hidden=(512, 256, 128), dropout: float = 0.2) -> nn.Sequential:
    """mia_prune / WeMeM 'nn': in -> 512 -> 256 -> 128 -> 2, ReLU, dropout 0.2."""
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
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


def sample_rows(sel_in: np.ndarray, sel_out: np.ndarray, cols: np.ndarray, cap: int, rng) -> tuple[np.ndarray, ...]:
    """(shadow, example) pairs drawn uniformly from the IN rows sel_in [S, N] and the OUT rows sel_out
    (balanced_shadows: the same count per example) of examples `cols`: at most cap // 2 of each.
    Returns shadow indices, example indices, IN labels."""
    ins, outs = np.flatnonzero(sel_in[:, cols]), np.flatnonzero(sel_out[:, cols])
    k = min(len(ins), len(outs), cap // 2)
    flat = np.concatenate([rng.choice(ins, k, replace=False), rng.choice(outs, k, replace=False)])
    s_idx, j = np.unravel_index(flat, (len(sel_in), len(cols)))
    return s_idx, cols[j], np.r_[np.ones(k, bool), np.zeros(k, bool)]


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
    order = torch.randperm(n, generator=gen)
    for i in range(0, n, size):
        if n - i >= 2:  # never a batch of one (BatchNorm in training mode)
            yield order[i:i + size]


def _optimizer(model: nn.Module, st: AttackSettings) -> torch.optim.Optimizer:
    if st.nn_optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=st.nn_lr, momentum=st.nn_momentum, weight_decay=st.nn_weight_decay)
    return torch.optim.Adam(model.parameters(), lr=st.nn_lr)


@torch.no_grad()
def _mean_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bs: int = 512) -> float:
    model.eval()
    total = sum(F.cross_entropy(model(x[i:i + bs]), y[i:i + bs], reduction="sum").item() for i in range(0, len(x), bs))
    return total / max(1, len(x))


def train_attack_model(model: nn.Module, x_tr, y_tr, x_val, y_val, st: AttackSettings, max_epochs: int) -> dict:
    """Seeded mini-batch training with early stopping on the validation loss; restores the best weights."""
    dev = torch.device(st.device)
    model.to(dev)
    opt = _optimizer(model, st)
    xt, yt = torch.as_tensor(x_tr, device=dev), torch.as_tensor(y_tr, dtype=torch.long, device=dev)
    xv, yv = torch.as_tensor(x_val, device=dev), torch.as_tensor(y_val, dtype=torch.long, device=dev)
    gen = torch.Generator().manual_seed(st.seed)
    best, best_state, bad, epochs = np.inf, copy.deepcopy(model.state_dict()), 0, 0
    for epochs in range(1, max_epochs + 1):
        model.train()
        for idx in _batches(len(xt), st.nn_batch_size, gen):
            idx = idx.to(dev)
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = _mean_loss(model, xv, yv)
        if val < best - 1e-4:
            best, best_state, bad = val, copy.deepcopy(model.state_dict()), 0
        elif (bad := bad + 1) >= st.nn_patience:
            break
    model.load_state_dict(best_state)
    return {"epochs": epochs, "val_loss": float(best), "train_rows": len(xt)}


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


def split_examples(cols: np.ndarray, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out examples of one group (at least one held out when possible)."""
    perm = rng.permutation(cols)
    n_val = min(len(cols) - 1, max(1, round(fraction * len(cols)))) if len(cols) > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def learned_attack(a: Learned, inp: AttackInput, st: AttackSettings) -> AttackOutput:
    with torch_threads(st.device, st.nn_cpu_threads):
        return _learned_attack(a, inp, st)


def _learned_attack(a: Learned, inp: AttackInput, st: AttackSettings) -> AttackOutput:
    require_shadows(inp, a.title, need_in=True)
    torch.manual_seed(st.seed)  # model initialisation and dropout
    rng = rng_for(st.seed, "attack_rows")
    n, c = len(inp.labels), inp.num_classes
    groups = inp.labels if a.per_class else np.zeros(n, int)
    num_groups = c if a.per_class else 1
    cap = st.samia_max_train_rows if a.samia else st.nn_max_train_rows
    cap = max(cap // num_groups, st.nn_min_class_rows) if a.per_class else cap
    sel_in, sel_out, _, _ = balanced_shadows(inp.shadow_keep, st.seed)
    f_t = _row_features(a, inp, [inp.target_logits], [inp.target_sens], np.zeros(n, int), np.arange(n))
    s_t, val_scores, val_in, val_groups, runs = np.zeros(n), [], [], [], []
    for g in range(num_groups):
        cols = np.flatnonzero(groups == g)
        if len(cols) == 0:
            continue
        train, held = split_examples(cols, st.nn_val_fraction, rng)
        s_tr, n_tr, y_tr = sample_rows(sel_in, sel_out, train, cap, rng)
        s_v, n_v, y_v = sample_rows(sel_in, sel_out, held, max(st.nn_max_val_rows // num_groups, 2), rng)
        x_v = _row_features(a, inp, inp.shadow_logits, inp.shadow_sens, s_v, n_v)
        x_tr = _row_features(a, inp, inp.shadow_logits, inp.shadow_sens, s_tr, n_tr)
        model = a.make_model(x_tr.shape[1:], c)
        epochs = st.samia_max_epochs if a.samia else st.nn_max_epochs
        runs.append(train_attack_model(model, x_tr, y_tr, x_v, y_v, st, epochs))
        s_t[cols] = member_margin(model, f_t[cols], st.device)
        val_scores.append(member_margin(model, x_v, st.device))
        val_in.append(y_v)
        val_groups.append(np.full(len(y_v), g))
    thr = group_thresholds(np.concatenate(val_scores), np.concatenate(val_in), np.concatenate(val_groups), num_groups)
    info = {"thresholds": thr.tolist(), "models": len(runs), "train_rows": sum(r["train_rows"] for r in runs),
            "val_rows": int(sum(len(v) for v in val_in)), "epochs": [r["epochs"] for r in runs],
            "val_loss": float(np.mean([r["val_loss"] for r in runs]))}
    how = f"shadow rows of held-out examples ({st.nn_val_fraction:.0%}, never trained on)"
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
