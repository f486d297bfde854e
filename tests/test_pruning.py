"""Pruning semantics (docs/pruning.md): each test fails if static, gmp or DPF were not what they claim."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from configs.config import ExperimentConfig
from models import build_model
from pruning import (PRUNING_METHODS, build_pruner, global_magnitude_masks, measure_sparsity,
                     prunable_parameters, scheduled_sparsity)
from utils.errors import UsageError

# Methods trained from scratch whose masks are global magnitude masks; the ones that prune a trained model and
# fine-tune it have their own references in tests/test_finetune.py (structured masks are not global magnitude
# masks), the saliency and dynamic ones (snip, synflow, rigl, set) in tests/test_sparse_family.py.
METHODS = [m for m, spec in PRUNING_METHODS.items()
           if spec.prunes and spec.source is None and spec.scorer is None and spec.grow is None]
GRADUAL = [m for m in METHODS if PRUNING_METHODS[m].uses_target]  # gmp, dpf: the cubic schedule


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny convolutions run faster on one thread


def tiny_resnet():
    torch.manual_seed(0)
    return build_model("resnet", 20, 1, 10, 1)  # 1x8x8 inputs: a few ms per step


def batch(it, shape=(16, 1, 8, 8)):
    g = torch.Generator().manual_seed(it)  # data depends only on the iteration: resumable runs match
    return torch.randn(*shape, generator=g), torch.randint(0, 10, (shape[0],), generator=g)


def train(model, pruner, opt, iters, start=0, after_refresh=None, after_step=None, shape=(16, 1, 8, 8),
          dtype=torch.float32):
    model.train()
    for it in range(start, start + iters):
        pruner.before_step(it)
        if after_refresh:
            after_refresh(it)
        x, y = batch(it, shape)
        opt.zero_grad()
        F.cross_entropy(model(x.to(dtype)), y).backward()
        pruner.after_backward()
        opt.step()
        pruner.after_optimizer_step()
        if after_step:
            after_step(it)


def sgd(model, wd=5e-4):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=wd)


def zeros(pruner):
    return sum(int((p == 0).sum()) for p in pruner.params)


def refresh_due(it, method, freq, target_iter, freeze_iter):
    frozen_before = freeze_iter is not None and it > freeze_iter
    regrow = PRUNING_METHODS[method].regrow  # a regrowing mask keeps being refreshed after the target
    return (it % freq == 0 or it == target_iter) and (it <= target_iter or regrow) and not frozen_before


# -- schedule and threshold ------------------------------------------------------------------------
def test_schedule_known_points():
    assert scheduled_sparsity(0, 0.9, 100) == 0.0
    assert scheduled_sparsity(50, 0.9, 100) == pytest.approx(0.9 * (1 - 1 / 8))
    assert scheduled_sparsity(99, 0.9, 100) < 0.9
    assert scheduled_sparsity(100, 0.9, 100) == 0.9
    assert scheduled_sparsity(500, 0.9, 100) == 0.9
    assert scheduled_sparsity(0, 0.9, 0) == 0.9  # target epoch 0: one-shot at initialisation


def test_global_threshold_exact_count_and_deterministic_ties():
    w = [torch.zeros(10, 10), -torch.ones(5, 5), torch.tensor([0.5, -0.5, 0.5, 2.0])]
    total = sum(x.numel() for x in w)
    for s in (0.1, 0.5, 0.77, 0.79, 0.99):
        masks = global_magnitude_masks(w, s)
        assert sum(int((~m).sum()) for m in masks) == round(s * total)
    masks = global_magnitude_masks(w, 102 / total)  # 100 zeros + 2 of the three tied 0.5s
    assert masks[2].tolist() == [False, False, True, True]  # ties pruned in index order
    assert masks[1].all()  # |-1| beats 0.5: magnitudes, not signed values
    named = global_magnitude_masks({"a": w[0], "b": w[1]}, 0.8)
    assert list(named) == ["a", "b"] and int((~named["a"]).sum()) == 100


def test_global_threshold_beyond_quantile_limit():
    # 3 x 5.7M > 2^24 elements (torch.quantile refuses this); integer-valued: ties at the threshold too
    g = torch.Generator().manual_seed(0)
    w = [torch.randint(-1000, 1000, (5_700_000,), generator=g).half() for _ in range(3)]
    masks = global_magnitude_masks(w, 0.9)
    assert sum(int((~m).sum()) for m in masks) == round(0.9 * 17_100_000)
    kept_min = min(float(x[m].abs().min()) for x, m in zip(w, masks))
    pruned_max = max(float(x[~m].abs().max()) for x, m in zip(w, masks))
    assert pruned_max <= kept_min


# -- the schedule as trained ------------------------------------------------------------------------
@pytest.mark.parametrize("method", GRADUAL)
def test_measured_sparsity_equals_schedule_at_every_refresh(method):
    per_epoch, freq, target_epoch, freeze_epoch = 10, 3, 2, 3  # target iteration 20 is not a multiple of 3
    model = tiny_resnet()
    pruner = build_pruner(method, model, 0.8, per_epoch, target_epoch, freeze_epoch, freq)
    total, seen = pruner.numel, []
    freeze_iter = freeze_epoch * per_epoch if PRUNING_METHODS[method].uses_freeze else None

    def check(it):
        if refresh_due(it, method, freq, target_epoch * per_epoch, freeze_iter):
            expected = round(scheduled_sparsity(it, 0.8, 20) * total)
            assert sum(int((~m).sum()) for m in pruner.mask_list) == expected
            assert abs(round(measure_sparsity(model)["sparsity"] * total) - expected) <= 1
            seen.append(it)

    opt = sgd(model)
    logs = []
    for epoch in range(4):
        train(model, pruner, opt, per_epoch, start=epoch * per_epoch, after_refresh=check)
        logs.append(pruner.end_epoch(epoch))
        assert pruner.at_target(epoch) == (epoch >= target_epoch)
    assert 20 in seen and seen[0] == 0
    assert [e["refreshes"] for e in logs] == [sum(e * 10 <= it < e * 10 + 10 for it in seen) for e in range(4)]
    assert logs[-1]["scheduled_sparsity"] == 0.8
    assert abs(round(logs[-1]["measured_sparsity"] * total) - round(0.8 * total)) <= 1


# -- static: one-shot at initialisation ---------------------------------------------------------------
def test_static_is_exactly_sparse_from_construction_and_its_mask_never_changes():
    """Pruned before the first step to exactly the target count, by global magnitude of the initial
    weights; then 30 steps with momentum and a large weight decay move nothing pruned and no mask bit.
    The target and freeze epochs passed in are ignored (config.py refuses them for static)."""
    model = tiny_resnet()
    initial = [p.detach().clone() for _, p in prunable_parameters(model)]
    pruner = build_pruner("static", model, 0.8, 10, 2, 3, 4)
    expected = global_magnitude_masks(initial, 0.8)
    assert all(torch.equal(m, e) for m, e in zip(pruner.mask_list, expected))
    assert zeros(pruner) == round(0.8 * pruner.numel)  # exact before any step
    assert pruner.frozen and pruner.target_epoch == 0 and pruner.freeze_epoch is None
    opt = sgd(model, wd=5e-3)

    def unchanged(it):
        assert all(torch.equal(m, e) for m, e in zip(pruner.mask_list, expected))
        assert zeros(pruner) == round(0.8 * pruner.numel)

    logs = []
    for epoch in range(3):
        train(model, pruner, opt, 10, start=epoch * 10, after_refresh=unchanged, after_step=unchanged)
        logs.append(pruner.end_epoch(epoch))
        assert pruner.at_target(epoch)  # every epoch is eligible for checkpoint selection
    assert [e["refreshes"] for e in logs] == [1, 0, 0] and all(e["mask_frozen"] for e in logs)
    assert [e["scheduled_sparsity"] for e in logs] == [0.8] * 3
    assert all(round(e["measured_sparsity"] * pruner.numel) == round(0.8 * pruner.numel) for e in logs)


# -- gmp: gradual, the mask only shrinks ----------------------------------------------------------------
def test_gmp_never_regrows_and_pruned_weights_stay_zero():
    model = tiny_resnet()
    pruner = build_pruner("gmp", model, 0.8, 10, 2, None, 4)
    opt = sgd(model, wd=5e-3)  # momentum filled before a weight is pruned and weight decay must not revive it
    masks = []

    def record(it):
        masks.append([m.clone() for m in pruner.mask_list])

    def pruned_are_zero(it):
        for p, m in zip(pruner.params, pruner.mask_list):
            assert (p[~m] == 0).all()

    train(model, pruner, opt, 30, after_refresh=record, after_step=pruned_are_zero)
    for before, after in zip(masks, masks[1:]):
        assert all(not (a & ~b).any() for a, b in zip(after, before))  # the mask only shrinks
    assert zeros(pruner) == round(0.8 * pruner.numel)


def _two_weight_model():
    conv = nn.Conv2d(1, 1, (1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 0.5]]]]))
    return nn.Sequential(conv)


@pytest.mark.parametrize("method", METHODS)
def test_dpf_regrows_where_the_loss_pushes_a_pruned_weight_up_and_the_others_do_not(method):
    """Weights (1.0, 0.5) at 50%: the 0.5 is pruned. The input feeds only that weight and the loss
    rewards it, so its gradient at the masked weight is -1 every step. DPF applies it to the dense
    weight, which passes 1.0 and returns; static and gmp mask it, so the weight stays dead."""
    model = _two_weight_model()
    pruner = build_pruner(method, model, 0.5, 1, 0, None, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.tensor([[[[0.0, 1.0]]]])
    for it in range(10):
        pruner.before_step(it)
        opt.zero_grad()
        (-model(x).sum()).backward()
        pruner.after_backward()
        opt.step()
        pruner.after_optimizer_step()
    log = pruner.end_epoch(0)
    mask = pruner.mask_list[0].flatten().tolist()
    spec = PRUNING_METHODS[method]
    if spec.regrow and spec.straight_through:  # dpf
        assert mask == [False, True] and log["reactivations"] == 1 and log["refreshes"] == 10
    else:
        assert mask == [True, False] and log["reactivations"] == 0
        assert model[0].weight[0, 0, 0, 1] == 0


@pytest.mark.parametrize("method", METHODS)
def test_gradient_reaching_the_dense_weight(method):
    """Reference: the gradient at w * m from an independent functional forward with w * m as leaves.
    DPF must hand it to the dense weight unmasked, static and gmp times the mask."""
    model = tiny_resnet()
    pruner = build_pruner(method, model, 0.7, 10, 0, None, 16)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)  # update = -grad
    x, y = batch(0)
    model.train()
    pruner.before_step(0)
    masked = {n: p.detach().clone() for n, p in zip(pruner.names, pruner.params)}
    straight_through = PRUNING_METHODS[method].straight_through  # dpf
    dense = {n: d.clone() for n, d in zip(pruner.names, pruner.dense)} if pruner.dense is not None else masked
    leaves = {n: w.clone().requires_grad_(True) for n, w in masked.items()}
    F.cross_entropy(torch.func.functional_call(model, {**dict(model.named_parameters()), **leaves}, (x,)), y).backward()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    pruner.after_backward()
    for n, p, m in zip(pruner.names, pruner.params, pruner.mask_list):
        g = leaves[n].grad
        assert (g[~m] != 0).any()  # the pruned positions do get a gradient: the check below means something
        expected = g if straight_through else g * m
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-7)
    opt.step()
    pruner.after_optimizer_step()
    for i, (n, m) in enumerate(zip(pruner.names, pruner.mask_list)):
        if straight_through:  # the dense weight moved by the full gradient, pruned positions included
            torch.testing.assert_close(pruner.dense[i], dense[n] - leaves[n].grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(pruner.params[i], (dense[n] - leaves[n].grad) * m, rtol=1e-5, atol=1e-6)


# -- DPF freeze -----------------------------------------------------------------------------------
def test_dpf_mask_fixed_and_model_exactly_sparse_after_freeze():
    model = tiny_resnet()
    pruner = build_pruner("dpf", model, 0.8, 10, 2, 3, 4)
    state = {}

    def check(it):
        if it < 30:
            return
        state.setdefault("mask", [m.clone() for m in pruner.mask_list])
        assert pruner.frozen and pruner.dense is None
        assert all(torch.equal(a, b) for a, b in zip(state["mask"], pruner.mask_list))
        assert all((p[~m] == 0).all() for p, m in zip(pruner.params, pruner.mask_list))

    train(model, pruner, sgd(model), 45, after_refresh=check, after_step=check)
    assert zeros(pruner) == round(0.8 * pruner.numel)
    assert pruner.end_epoch(4)["mask_frozen"]


# -- saving -------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
def test_sparse_state_dict_round_trip(method):
    model = tiny_resnet()
    pruner = build_pruner(method, model, 0.8, 10, 1, 2, 4)
    train(model, pruner, sgd(model), 15)  # DPF not yet frozen: dense weights differ from the saved ones
    state = pruner.sparse_state_dict()
    for n, m in pruner.masks.items():
        assert (state[n][~m] == 0).all() and not torch.signbit(state[n][~m]).any()  # +0.0, stored as zeros
    assert measure_sparsity(state) == measure_sparsity(model)
    fresh = build_model("resnet", 20, 1, 10, 1)
    fresh.load_state_dict(state)
    x = torch.randn(4, 1, 8, 8)
    model.eval(), fresh.eval()
    torch.testing.assert_close(model(x), fresh(x), rtol=0, atol=0)


# -- models ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch, layers, width", [("resnet", 20, 1), ("wideresnet", 16, 2)])
def test_prunable_set_is_every_conv(arch, layers, width):
    model = build_model(arch, layers, width, 10, 3)
    modules = dict(model.named_modules())
    names = [n for n, _ in prunable_parameters(model)]
    assert "conv1.weight" in names  # the first conv
    assert any("shortcut" in n and modules[n[:-len(".weight")]].kernel_size == (1, 1) for n in names)
    assert all(isinstance(modules[n[:-len(".weight")]], nn.Conv2d) for n in names)  # no BN, no Linear
    assert len(names) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert measure_sparsity(model)["sparsity"] == 0.0  # dense models measure too


@pytest.mark.parametrize("arch, layers, width", [("resnet", 20, 1), ("wideresnet", 16, 2)])
@pytest.mark.parametrize("method", METHODS)
def test_works_for_resnet_and_wrn(arch, layers, width, method):
    model = build_model(arch, layers, width, 10, 3).to(memory_format=torch.channels_last)  # as the trainer
    pruner = build_pruner(method, model, 0.9, 2, 1, 1, 1)  # freeze epoch == target epoch
    train(model, pruner, sgd(model), 3, shape=(2, 3, 32, 32))
    assert abs(zeros(pruner) - round(0.9 * pruner.numel)) <= 1
    assert measure_sparsity(model)["sparsity"] == pytest.approx(0.9, abs=1 / pruner.numel)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, needle", [
    (dict(method="magic"), f"valid: {', '.join(PRUNING_METHODS)}"),
    (dict(method="dpf", target_epoch=5, freeze_epoch=3), "before the target epoch"),
    (dict(prune_freq=0), "must be positive"),
])
def test_bad_input(kwargs, needle):
    args = dict(method="static", sparsity=0.5, iters_per_epoch=10, target_epoch=0, freeze_epoch=None, prune_freq=16)
    args.update(kwargs)
    with pytest.raises(UsageError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build_pruner(model=tiny_resnet(), **args)


@pytest.mark.parametrize("sparsity", [0.0, 1.0, 1.5])
def test_a_sparsity_out_of_range_is_refused_by_the_config(sparsity):
    """The range is validated once, by the config the pruner is built from (the pruner only asserts it)."""
    with pytest.raises(UsageError, match=r"sparsity must be in \(0, 1\)"):
        ExperimentConfig(dataset="digits", epochs=4, method="static", sparsity=sparsity).resolved()
    with pytest.raises(AssertionError):
        build_pruner("static", tiny_resnet(), sparsity, 10, 0)


def test_dense_is_a_method_that_builds_no_pruner():
    assert not PRUNING_METHODS["dense"].prunes and next(iter(PRUNING_METHODS)) == "dense"
    assert build_pruner("dense", tiny_resnet(), 0.0, 10, None) is None
    assert all(spec.prunes for m, spec in PRUNING_METHODS.items() if m != "dense")


def test_only_dpf_uses_a_freeze_epoch():
    assert build_pruner("gmp", tiny_resnet(), 0.5, 10, 5, 3).freeze_epoch is None
    assert build_pruner("dpf", tiny_resnet(), 0.5, 10, 2, 3).freeze_epoch == 3


# -- whole trajectories against a from-scratch reference ------------------------------------------------
def reference_run(model, method, iters, s_f, target_iter, freq, lr=0.05, momentum=0.9, wd=5e-4):
    """The method written out plainly (docs/pruning.md; Lin et al. 2020, Algorithm 1 with
    SGD + momentum + weight decay), with no code shared with pruning/: the weights W live in a dict,
    masks come from a full sort of |W|, the forward pass is a functional call at W * m.
    DPF: the gradient at W * m updates the dense W everywhere; masks ranked on every |W|.
    gmp: the gradient is masked, W is zero where pruned, masks ranked among the survivors only.
    static: gmp's rules with target_iter = 0, i.e. one mask at iteration 0, at the final sparsity.
    The registry's switches choose the rules (DPF: regrow and straight-through), so a new method made
    of them is checked too."""
    regrow, straight_through = PRUNING_METHODS[method].regrow, PRUNING_METHODS[method].straight_through
    W = {n: p.detach().clone() for n, p in model.named_parameters()}
    conv = [n for n, mod in ((f"{k}.weight", m) for k, m in model.named_modules()) if isinstance(mod, nn.Conv2d)]
    masks = {n: torch.ones_like(W[n], dtype=torch.bool) for n in conv}
    buf = {n: torch.zeros_like(w) for n, w in W.items()}
    total = sum(W[n].numel() for n in conv)
    model.train()
    for it in range(iters):
        if (it % freq == 0 or it == target_iter) and (regrow or it <= target_iter):
            s = s_f * (1 - (1 - it / target_iter) ** 3) if it < target_iter else s_f
            score = torch.cat([(W[n].abs() if regrow else torch.where(masks[n], W[n].abs(), -1.0)).flatten()
                               for n in conv])
            keep = torch.ones(total, dtype=torch.bool)
            keep[torch.argsort(score, stable=True)[:round(s * total)]] = False
            masks = {n: m.view(W[n].shape) for n, m in zip(conv, keep.split([W[n].numel() for n in conv]))}
        eff = {n: (W[n] * masks[n] if n in masks else W[n]).detach().requires_grad_(True) for n in W}
        x, y = batch(it)
        loss = F.cross_entropy(torch.func.functional_call(model, eff, (x.double(),)), y)
        grads = dict(zip(eff, torch.autograd.grad(loss, list(eff.values()))))
        for n in W:
            g = grads[n] if (straight_through or n not in masks) else grads[n] * masks[n]
            buf[n] = momentum * buf[n] + (g + wd * W[n]) if it else g + wd * W[n]
            W[n] = W[n] - lr * buf[n]
            if not straight_through and n in masks:
                W[n] = W[n] * masks[n]
    return W, masks


@pytest.mark.parametrize("method", METHODS)
def test_a_whole_run_follows_the_plain_reference(method):
    """40 iterations over the cubic ramp and past the target (9-11 mask refreshes, momentum and weight
    decay at work; static: one mask at iteration 0): the pruner's dense weights, masks and model
    weights equal the plain reference.
    float64: BatchNorm over a nearly-pruned channel divides by a tiny std and amplifies float32 rounding
    differences (1e-7 -> 1e-4 within a few steps), which would make the masks part ways by chance."""
    iters, per_epoch, target_epoch, freq = 40, 10, 3, 4
    model = tiny_resnet().double()
    ref_model = copy.deepcopy(model)
    pruner = build_pruner(method, model, 0.8, per_epoch, target_epoch, None, freq)  # DPF: never frozen here
    train(model, pruner, sgd(model), iters, dtype=torch.float64)
    target_iter = target_epoch * per_epoch if PRUNING_METHODS[method].uses_target else 0
    W, masks = reference_run(ref_model, method, iters, 0.8, target_iter, freq)
    for i, (n, p) in enumerate(zip(pruner.names, pruner.params)):
        assert torch.equal(pruner.mask_list[i], masks[n]), f"{n}: masks differ"
        dense = pruner.dense[i] if pruner.dense is not None else p
        torch.testing.assert_close(dense, W[n], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(p, W[n] * masks[n], rtol=1e-9, atol=1e-12)
    for n, p in model.named_parameters():
        if n not in masks:
            torch.testing.assert_close(p, W[n], rtol=1e-9, atol=1e-12)
    log = pruner.end_epoch(3)  # every refresh of the run: 0, 4, ..., the target iteration 30, (DPF: 32, 36)
    assert log["refreshes"] == sum(refresh_due(it, method, freq, target_iter, None) for it in range(iters))
    assert log["refreshes"] == {"dpf": 11, "gmp": 9, "static": 1}.get(method, log["refreshes"])
    if PRUNING_METHODS[method].regrow:  # weights did come back, so the comparison covered reactivations
        assert log["reactivations"] > 0
