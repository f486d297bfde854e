"""Signals (training/signals.py): the query views, SAMIA's sensitivity against its closed form, eval-mode
invariance of BatchNorm statistics and determinism."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from data import DeviceData
from data.datasets import from_arrays
from training import signals
from training.signals import compute_logits, compute_sensitivity, query_list
from models import build_model


def _pool(n=70, c=3, hw=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, hw, hw, c), dtype=np.uint8) if c == 3 else rng.integers(0, 256, (n, hw, hw), dtype=np.uint8)
    y = rng.integers(0, 4, n)
    ds = from_arrays("t", x, y, x[:8], y[:8])
    return ds, DeviceData.build(ds.x_train, ds.y_train, ds, "cpu")


def _reference_view(x: np.ndarray, flip: bool, dx: int, dy: int) -> np.ndarray:
    """Out[i, j] = x[i + dy, j + dx], zero outside the image, then a left-right mirror."""
    out = np.zeros_like(x)
    h, w = x.shape[-2:]
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[..., i, j] = x[..., i + dy, j + dx]
    return out[..., ::-1] if flip else out


@pytest.mark.parametrize("channels", [3, 1])
def test_every_query_is_the_documented_view(channels):
    # An identity "model" (flatten): the logits are the normalised view itself, so each query can be
    # checked pixel by pixel against a plain reference.
    ds, pool = _pool(c=channels)
    queries = query_list(pool.flip)
    assert len(queries) == (18 if channels == 3 else 9)
    assert queries[:2] == ([(False, 0, 0), (True, 0, 0)] if channels == 3 else [(False, 0, 0), (False, 1, 0)])
    dim = channels * 6 * 6
    logits = compute_logits(nn.Flatten(), pool, len(queries), dim)
    mean, std = pool.mean.numpy(), pool.std.numpy()
    for q, (f, dx, dy) in enumerate(queries):
        want = (_reference_view(ds.x_train, f, dx, dy).astype(np.float32) / 255 - mean) / std
        np.testing.assert_allclose(logits[:, q], want.reshape(len(want), dim), rtol=1e-5, atol=1e-5)


def test_too_many_queries_is_a_usage_error():
    from utils.errors import UsageError

    _, pool = _pool(c=1)
    with pytest.raises(UsageError, match="exceeds the 9 queries"):
        compute_logits(nn.Flatten(), pool, 10, 36)


def test_sensitivity_matches_its_closed_form_for_a_linear_model():
    # For a smooth f and small eps, |softmax(f(x + eps u)) - softmax(f(x))|_c / eps -> |J_c . u| with
    # u ~ N(0, I), whose mean is sqrt(2/pi) * ||J_c||_2 (J_c: gradient of p_c w.r.t. the input).
    torch.manual_seed(0)
    _, pool = _pool(n=3, c=1, hw=4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    draws = 4000
    sens = compute_sensitivity(model, pool, 4, draws=draws, eps=1e-3, seed=1)
    x = pool.normalize(pool.x).requires_grad_(True)
    p = torch.softmax(model(x), 1)
    want = np.zeros((3, 4))
    for c in range(4):
        (g,) = torch.autograd.grad(p[:, c].sum(), x, retain_graph=True)
        want[:, c] = np.sqrt(2 / np.pi) * g.flatten(1).norm(dim=1).numpy()
    np.testing.assert_allclose(sens, want, rtol=0.06)  # Monte Carlo: ~1.2% standard error at 4000 draws


def test_sensitivity_of_a_constant_model_is_zero():
    _, pool = _pool(n=5, c=1, hw=4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    nn.init.zeros_(model[1].weight)
    assert np.all(compute_sensitivity(model, pool, 3, draws=3, eps=1e-3, seed=0) == 0)


def test_signals_leave_batchnorm_statistics_untouched_and_are_deterministic():
    torch.manual_seed(0)
    _, pool = _pool(n=150, c=3, hw=8)
    model = build_model("resnet", 20, 1, 4, 3)
    model.train()
    for _ in range(2):  # non-trivial running statistics
        model(pool.normalize(pool.x[:64]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = compute_logits(model, pool, 2, 4)
    s1 = compute_sensitivity(model, pool, 4, draws=3, eps=1e-3, seed=7)
    b = compute_logits(model, pool, 2, 4)
    s2 = compute_sensitivity(model, pool, 4, draws=3, eps=1e-3, seed=7)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed during signal extraction"
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(s1, s2)
    assert a.shape == (150, 2, 4) and a.dtype == np.float32 and s1.shape == (150, 4) and s1.dtype == np.float32
    # eval mode, not the batch statistics: a single example scores as it does inside the pool
    one = DeviceData(pool.x[5:6], pool.y[5:6], pool.mean, pool.std, pool.pad, pool.flip)
    np.testing.assert_allclose(compute_logits(model, one, 2, 4)[0], a[5], rtol=1e-4, atol=1e-5)


# -- precision: true fp32 whatever surrounds the call ----------------------------------------------------

def _resnet_pool(n=24):
    torch.manual_seed(0)
    _, pool = _pool(n=n, c=3, hw=8)
    model = build_model("resnet", 20, 1, 4, 3)
    model.train()
    for _ in range(2):  # non-trivial running statistics, so the eval-mode outputs are not degenerate
        model(pool.normalize(pool.x))
    return model.eval(), pool


def test_signals_ignore_an_enclosing_autocast(one_thread):
    # Training runs under bf16 autocast (CUDA); on CPU, a bf16 autocast around the call shows the same
    # leak: without the fp32 guard the convolutions run in bf16 and the logits move by ~1e-2.
    model, pool = _resnet_pool()
    ref_logits = compute_logits(model, pool, 2, 4)
    ref_sens = compute_sensitivity(model, pool, 4, draws=3, eps=1e-3, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = compute_logits(model, pool, 2, 4)
        sens = compute_sensitivity(model, pool, 4, draws=3, eps=1e-3, seed=3)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sens, ref_sens, rtol=1e-5, atol=1e-6)


class _FlagRecorder(nn.Module):
    """A linear model that records the TF32 switches seen by each forward pass."""

    def __init__(self, d: int, classes: int):
        super().__init__()
        self.lin, self.seen = nn.Linear(d, classes), []

    def forward(self, x):
        self.seen.append([getattr(obj, attr) for obj, attr, _ in signals._tf32_knobs()])
        return self.lin(x.flatten(1))


def test_tf32_is_off_inside_the_signal_pass_and_restored_after():
    # The switches are process-wide and CUDA-only, but readable and settable on a CPU build.
    knobs = signals._tf32_knobs()
    before = [getattr(obj, attr) for obj, attr, _ in knobs]
    tf32 = [("tf32" if isinstance(v, str) else True) for _, _, v in knobs]
    _, pool = _pool(n=5, c=1, hw=4)
    model = _FlagRecorder(16, 3)
    try:
        for (obj, attr, _), v in zip(knobs, tf32):
            setattr(obj, attr, v)  # as a user enabling TF32 for training would
        compute_logits(model, pool, 1, 3)
        compute_sensitivity(model, pool, 3, draws=2, eps=1e-3, seed=0)
        after = [getattr(obj, attr) for obj, attr, _ in knobs]
    finally:
        for (obj, attr, _), v in zip(knobs, before):
            setattr(obj, attr, v)
    assert model.seen and all(s == [v for _, _, v in knobs] for s in model.seen)
    assert after == tf32


def test_one_pass_sensitivity_equals_separate_clean_and_perturbed_passes(monkeypatch, one_thread):
    # The definition before the one-pass change: f(x) and f(x + eps u) in separate forward passes, the
    # same noise stream (4 rows per step here: 3 steps, the last one partial).
    monkeypatch.setattr(signals, "_batch_size", lambda device, *a: 12)
    model, pool = _resnet_pool(n=10)
    draws, eps, seed = 3, 1e-3, 5
    gen = torch.Generator().manual_seed(seed)
    want = []
    with torch.no_grad():
        for i in range(0, len(pool), 4):
            x = pool.normalize(pool.x[i:i + 4])
            p = torch.softmax(model(x), 1)
            u = torch.randn((draws,) + x.shape, generator=gen)
            pp = torch.softmax(model((x.unsqueeze(0) + eps * u).flatten(0, 1)), 1).view(draws, len(x), -1)
            want.append(((pp - p).abs().mean(0) / eps).numpy())
    want = np.concatenate(want)
    got = compute_sensitivity(model, pool, 4, draws=draws, eps=eps, seed=seed)
    assert want.min() > 1e-3  # a real signal, not zeros on both sides
    # fp32 rounding of p (~1e-7) divided by eps: ~1e-4 of the values at most
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * want.max())
