"""Learned attacks: an attack model trained on shadow outputs labelled IN/OUT, then applied to the target.

Shadow rows: the last shadow is held out whole as a pseudo-target (its rows are never trained on);
its rows are the validation set for early stopping and calibrate the decision threshold, so the
target's membership is never used. Training rows come from the other shadows, balanced IN/OUT and
capped (AttackSettings.nn_max_train_rows). One training routine for every model here.
Deviation from mia_prune, documented in docs/attacks.md: Adam lr 1e-3 by default (SGD lr 1e-3
needs ~100 epochs to converge); `nn_optimizer="sgd"` restores SGD lr 1e-3, momentum 0.9, wd 5e-4.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from mia.attacks import AttackInput, AttackOutput, AttackSettings, posteriors
from mia.metrics import best_threshold
from utils.errors import UsageError


# -- attack models ------------------------------------------------------------------------------------

def mlp(d_in: int, hidden=(512, 256, 128), dropout: float = 0.2) -> nn.Sequential:
    """mia_prune / WeMeM 'nn': in -> 512 -> 256 -> 128 -> 2, ReLU, dropout 0.2."""
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(), nn.Dropout(dropout)]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, 2))


class SAMIA(nn.Module):
    """Yuan & Zhang: one token (p_c, sens_c, onehot_c) per class -> BatchNorm -> Linear(3 -> 64) + GELU ->
    Transformer encoder (3 layers, d 64, 4 heads, ff 128, dropout 0.2) -> Linear(64 C -> 64) + ReLU -> Linear(64 -> 2)."""

    def __init__(self, num_classes: int, d: int = 64):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.embed = nn.Sequential(nn.Linear(3, d), nn.GELU())
        layer = nn.TransformerEncoderLayer(d, 4, 128, dropout=0.2, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(d * num_classes, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, tokens):  # [B, C, 3]
        b, c, _ = tokens.shape
        x = self.bn(tokens.reshape(b * c, 3)).reshape(b, c, 3)
        return self.head(self.encoder(self.embed(x)).flatten(1))


# -- features -------------------------------------------------------------------------------------------

def _onehot(labels, c):
    return np.eye(c, dtype=np.float32)[labels]


def feat_posterior(p, labels, sens):
    return p


def feat_top3(p, labels, sens):
    return -np.sort(-p, axis=-1)[..., :3]


def feat_posterior_label(p, labels, sens):
    return np.concatenate([p, np.broadcast_to(_onehot(labels, p.shape[-1]), p.shape)], axis=-1)


def feat_samia(p, labels, sens):
    oh = np.broadcast_to(_onehot(labels, p.shape[-1]), p.shape)
    return np.stack([p, sens, oh], axis=-1)  # [..., N, C, 3]


# -- one training routine ---------------------------------------------------------------------------------

def _rows(feat_s: np.ndarray, keep_s: np.ndarray, cap: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Flatten [S, N, ...] shadow features to rows, balanced IN/OUT, at most `cap` rows."""
    x = feat_s.reshape((-1,) + feat_s.shape[2:])
    y = keep_s.reshape(-1)
    ins, outs = np.flatnonzero(y), np.flatnonzero(~y)
    k = min(len(ins), len(outs), cap // 2)
    idx = np.concatenate([rng.choice(ins, k, replace=False), rng.choice(outs, k, replace=False)])
    return x[idx], y[idx]


def _predict(model, x: np.ndarray, device, bs: int = 4096) -> np.ndarray:
    """Member score = logit difference (no saturation, unlike the softmax probability)."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), bs):
            o = model(torch.as_tensor(x[i:i + bs], dtype=torch.float32, device=device))
            out.append((o[:, 1] - o[:, 0]).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def train_attack_model(model: nn.Module, x_tr, y_tr, x_val, y_val, st: AttackSettings, max_epochs: int) -> dict:
    """Seeded mini-batch training with early stopping on the validation loss; restores the best weights."""
    dev = torch.device(st.device)
    model.to(dev)
    if st.nn_optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=st.nn_lr, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=st.nn_lr)
    xt = torch.as_tensor(x_tr, dtype=torch.float32, device=dev)
    yt = torch.as_tensor(y_tr, dtype=torch.long, device=dev)
    xv = torch.as_tensor(x_val, dtype=torch.float32, device=dev)
    yv = torch.as_tensor(y_val, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(st.seed)
    best, best_state, bad, epoch = np.inf, copy.deepcopy(model.state_dict()), 0, 0
    for epoch in range(max_epochs):
        model.train()
        order = torch.randperm(len(xt), device=dev, generator=gen)
        for i in range(0, len(xt) - 1, st.nn_batch_size):  # -1: never a batch of one (BatchNorm)
            idx = order[i:i + st.nn_batch_size]
            if len(idx) < 2:
                continue
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = sum(F.cross_entropy(model(xv[i:i + 4096]), yv[i:i + 4096], reduction="sum").item()
                      for i in range(0, len(xv), 4096)) / max(1, len(xv))
        if val < best - 1e-4:
            best, best_state, bad = val, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= st.nn_patience:
                break
    model.load_state_dict(best_state)
    return {"epochs": epoch + 1, "val_loss": best, "train_rows": len(xt)}


# -- attacks ----------------------------------------------------------------------------------------------

def _features(inp: AttackInput, feat_fn, needs_sens: bool):
    if needs_sens and (inp.target_sens is None or inp.shadow_sens is None):
        raise UsageError("SAMIA needs sensitivity.npy for the target and every shadow (recompute the signals)")
    f_t = feat_fn(posteriors(inp.target_logits).astype(np.float32), inp.labels, inp.target_sens)
    f_s = feat_fn(posteriors(inp.shadow_logits).astype(np.float32), inp.labels, inp.shadow_sens)
    return f_t, f_s


def _learned_attack(feat_fn, make_model, needs_sens=False, per_class=False, epochs_key="nn_max_epochs"):
    def attack(inp: AttackInput, st: AttackSettings) -> AttackOutput:
        if inp.num_shadows < 2:
            raise UsageError(f"learned attacks need at least 2 shadow models (one trains, one calibrates); "
                             f"this run has {inp.num_shadows}; train with --num-shadows N")
        torch.manual_seed(st.seed)
        rng = np.random.default_rng(st.seed)
        f_t, f_s = _features(inp, feat_fn, needs_sens)
        train_s, hold = slice(0, inp.num_shadows - 1), inp.num_shadows - 1  # last shadow = pseudo-target
        groups = inp.labels if per_class else np.zeros_like(inp.labels)
        scores, hold_scores, info = np.zeros(len(inp.labels)), np.zeros(len(inp.labels)), []
        for g in np.unique(groups):
            cols = np.flatnonzero(groups == g)
            x_tr, y_tr = _rows(f_s[train_s][:, cols], inp.shadow_keep[train_s][:, cols],
                               st.nn_max_train_rows // (len(np.unique(groups))), rng)
            val = cols if len(cols) <= st.nn_max_val_rows else np.sort(rng.choice(cols, st.nn_max_val_rows, replace=False))
            model = make_model(f_t.shape[1:], len(np.unique(inp.labels)) if not per_class else None)
            info.append(train_attack_model(model, x_tr, y_tr, f_s[hold][val], inp.shadow_keep[hold][val], st,
                                           getattr(st, epochs_key)))
            scores[cols] = _predict(model, f_t[cols], st.device)
            hold_scores[cols] = _predict(model, f_s[hold][cols], st.device)
        thr = best_threshold(hold_scores, inp.shadow_keep[hold])
        return AttackOutput(scores, threshold=thr, info={"training": info[:3], "models": len(info)})

    return attack


def _mlp_for(shape, _c):
    return mlp(int(np.prod(shape)))


def _samia_for(shape, _c):
    return SAMIA(shape[0])


ATTACK_FNS = {
    "shokri_nn": _learned_attack(feat_posterior, _mlp_for, per_class=True),
    "top3_nn": _learned_attack(feat_top3, _mlp_for),
    "class_label_nn": _learned_attack(feat_posterior_label, _mlp_for),
    "neural_network": _learned_attack(feat_posterior, _mlp_for),
    "samia": _learned_attack(feat_samia, _samia_for, needs_sens=True, epochs_key="samia_max_epochs"),
}
