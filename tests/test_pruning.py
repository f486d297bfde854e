"""Pruning semantics (REFERENCE.md section 6): each test fails if static or DPF were not what they claim."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import build_model
from pruning import (PRUNING_METHODS, build_pruner, global_magnitude_masks, measure_sparsity,
                     prunable_parameters, scheduled_sparsity)
from utils.errors import UsageError


def tiny_net():
    torch.manual_seed(0)
    return build_model("resnet", 20, 1, 10, 1)  # 1x8x8 input: fast


def step(model, pruner, opt, it, x, y):
    pruner.before_step(it)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    pruner.before_optimizer_step()
    opt.step()
    pruner.after_optimizer_step()


def run(method, iters=40, sparsity=0.8, target_epoch=2, freeze_epoch=None, freq=4, per_epoch=10, wd=5e-4, on_step=None):
    model = tiny_net()
    pruner = build_pruner(method, model, sparsity, per_epoch, target_epoch, freeze_epoch, freq)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=wd)
    g = torch.Generator().manual_seed(0)
    for it in range(iters):
        x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
        step(model, pruner, opt, it, x, y)
        if on_step:
            on_step(it, model, pruner)
    return model, pruner


def zeros_fraction(pruner):
    zeros = sum(int((p == 0).sum()) for p in pruner.params)
    return zeros, sum(p.numel() for p in pruner.params)


def test_schedule_known_points():
    assert scheduled_sparsity(0, 0.9, 100) == 0.0
    assert scheduled_sparsity(50, 0.9, 100) == pytest.approx(0.9 * (1 - 1 / 8))
    assert scheduled_sparsity(100, 0.9, 100) == 0.9
    assert scheduled_sparsity(500, 0.9, 100) == 0.9
    assert scheduled_sparsity(0, 0.9, 0) == 0.9  # target epoch 0: one-shot at init


@pytest.mark.parametrize("method", list(PRUNING_METHODS))
def test_measured_sparsity_equals_schedule_at_every_refresh(method):
    def check(it, model, pruner):
        if pruner.refresh_log and pruner.refresh_log[-1]["iter"] == it:
            zeros, total = zeros_fraction(pruner)
            expected = round(pruner.refresh_log[-1]["scheduled_sparsity"] * total)
            # weights pruned by the mask are exact zeros; an unpruned weight is zero only by accident
            assert abs(zeros - expected) <= 1 or zeros >= expected
            assert sum(int((~m).sum()) for m in pruner.mask_list) == expected

    model, pruner = run(method, on_step=check, freeze_epoch=3 if method == "dpf" else None)
    assert measure_sparsity(model)["sparsity"] == pytest.approx(0.8, abs=1 / 1000)


def test_global_threshold_exact_count_with_ties():
    w = [torch.zeros(10, 10), torch.ones(5, 5), torch.tensor([0.5, 0.5, 0.5, 2.0])]
    for s in (0.1, 0.5, 0.77, 0.99):
        masks = global_magnitude_masks(w, s)
        total = sum(x.numel() for x in w)
        assert sum(int((~m).sum()) for m in masks) == round(s * total)
    masks = global_magnitude_masks(w, 0.05)
    assert masks[2][3] and masks[1].all()  # largest magnitudes kept


def test_global_threshold_beyond_quantile_limit():
    # > 2^24 elements in total: torch.quantile would raise here
    w = [torch.rand(9_000_000), torch.rand(8_000_000)]
    masks = global_magnitude_masks(w, 0.9)
    assert sum(int((~m).sum()) for m in masks) == round(0.9 * 17_000_000)


def test_static_never_regrows_and_stays_exactly_zero():
    history = []

    def check(it, model, pruner):
        history.append([m.clone() for m in pruner.mask_list])
        for p, m in zip(pruner.params, pruner.mask_list):
            assert (p[~m] == 0).all()  # even with momentum and weight decay

    run("static", on_step=check, wd=5e-3)
    for before, after in zip(history, history[1:]):
        for b, a in zip(before, after):
            assert not (a & ~b).any()  # the mask only shrinks


def test_dpf_regrows_when_the_loss_pushes_a_pruned_weight_back():
    """One conv with two weights: prune the smaller; the loss rewards the pruned one, whose dense value
    keeps growing under the straight-through gradient until it overtakes the kept one."""
    conv = nn.Conv2d(1, 1, (1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 0.5]]]]))
    model = nn.Sequential(conv)
    pruner = build_pruner("dpf", model, 0.5, 1, 0, None, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.tensor([[[[0.0, 1.0]]]])
    flips = []
    for it in range(20):
        pruner.before_step(it)
        loss = -model(x).sum() + 0.0 * conv.weight.sum()  # pushes weight[1] (the pruned one) up
        opt.zero_grad()
        loss.backward()
        pruner.before_optimizer_step()
        opt.step()
        pruner.after_optimizer_step()
        flips.append(pruner.refresh_log[-1]["reactivations"])
    assert pruner.mask_list[0].flatten().tolist() == [False, True]
    assert sum(flips) >= 1
    # the same set-up under static keeps the pruned weight dead
    conv2 = nn.Conv2d(1, 1, (1, 2), bias=False)
    with torch.no_grad():
        conv2.weight.copy_(torch.tensor([[[[1.0, 0.5]]]]))
    m2 = nn.Sequential(conv2)
    p2 = build_pruner("static", m2, 0.5, 1, 0, None, 1)
    o2 = torch.optim.SGD(m2.parameters(), lr=0.1)
    for it in range(20):
        p2.before_step(it)
        loss = -m2(x).sum()
        o2.zero_grad()
        loss.backward()
        p2.before_optimizer_step()
        o2.step()
        p2.after_optimizer_step()
    assert p2.mask_list[0].flatten().tolist() == [True, False] and conv2.weight[0, 0, 0, 1] == 0


@pytest.mark.parametrize("method", list(PRUNING_METHODS))
def test_gradient_reaching_dense_weight(method):
    """DPF: dense w moves by the gradient taken at w * m, unmasked. Static: by that gradient times m."""
    model = tiny_net()
    pruner = build_pruner(method, model, 0.7, 10, 0, None, 16)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # plain SGD: update = -grad
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    pruner.before_step(0)
    masked = [p.detach().clone() for p in pruner.params]
    dense_before = [d.clone() for d in pruner.dense] if pruner.dense else masked
    # reference gradient at the masked weights, by an independent functional forward
    leaves = {n: w.clone().requires_grad_(True) for n, w in zip(pruner.names, masked)}
    params = dict(model.named_parameters())
    params.update(leaves)
    model.train()
    F.cross_entropy(torch.func.functional_call(model, params, (x,)), y).backward()
    g_ref = [leaves[n].grad for n in pruner.names]
    # the pruner's step (BatchNorm running stats updated twice: harmless for the gradient check)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    pruner.before_optimizer_step()
    opt.step()
    pruner.after_optimizer_step()
    for i, (m, g) in enumerate(zip(pruner.mask_list, g_ref)):
        if method == "dpf":
            torch.testing.assert_close(pruner.dense[i], dense_before[i] - g, rtol=1e-4, atol=1e-6)
        else:
            torch.testing.assert_close(pruner.params[i], (masked[i] - g * m) * m, rtol=1e-4, atol=1e-6)


def test_dpf_mask_frozen_after_freeze_epoch():
    masks = {}

    def check(it, model, pruner):
        if it >= 30:
            masks.setdefault("frozen", [m.clone() for m in pruner.mask_list])
            for a, b in zip(masks["frozen"], pruner.mask_list):
                assert torch.equal(a, b)
            assert pruner.frozen and pruner.dense is None
            for p, m in zip(pruner.params, pruner.mask_list):
                assert (p[~m] == 0).all()

    run("dpf", iters=45, target_epoch=2, freeze_epoch=3, on_step=check)


@pytest.mark.parametrize("method", list(PRUNING_METHODS))
def test_sparse_state_dict_round_trip(method):
    model, pruner = run(method, iters=25, freeze_epoch=3 if method == "dpf" else None)
    state = pruner.sparse_state_dict()
    for n, m in pruner.masks.items():
        assert (state[n][~m] == 0).all()
    fresh = build_model("resnet", 20, 1, 10, 1)
    fresh.load_state_dict(state)
    x = torch.randn(4, 1, 8, 8)
    model.eval(), fresh.eval()
    torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=0)


def test_prunable_set():
    model = build_model("resnet", 20, 1, 10, 3)
    names = [n for n, _ in prunable_parameters(model)]
    assert "conv1.weight" in names
    assert any("shortcut.0.weight" in n for n in names)  # 1x1 projection convs
    assert not any("bn" in n or n.startswith("fc") for n in names)
    assert len(names) == sum(isinstance(m, nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize("arch, layers, shape", [("resnet", 20, (4, 3, 32, 32)), ("wideresnet", 16, (4, 3, 32, 32)),
                                                 ("resnet", 18, (2, 1, 8, 8))])
@pytest.mark.parametrize("method", list(PRUNING_METHODS))
def test_works_for_resnet_and_wrn(arch, layers, shape, method):
    model = build_model(arch, layers, 2, 10, shape[1])
    pruner = build_pruner(method, model, 0.9, 2, 0, 1, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for it in range(3):
        step(model, pruner, opt, it, torch.randn(*shape), torch.randint(0, 10, (shape[0],)))
    assert measure_sparsity(model)["sparsity"] == pytest.approx(0.9, abs=2e-6)


@pytest.mark.parametrize("kwargs, needle", [
    (dict(method="magic"), "valid: static, dpf"),
    (dict(sparsity=0.0), "sparsity must be in (0, 1)"),
    (dict(sparsity=1.0), "sparsity must be in (0, 1)"),
    (dict(sparsity=1.5), "sparsity must be in (0, 1)"),
    (dict(method="dpf", target_epoch=5, freeze_epoch=3), "before the target epoch"),
])
def test_bad_input(kwargs, needle):
    args = dict(method="static", sparsity=0.5, target_epoch=0, freeze_epoch=None)
    args.update(kwargs)
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build_pruner(args["method"], tiny_net(), args["sparsity"], 10, args["target_epoch"], args["freeze_epoch"])
