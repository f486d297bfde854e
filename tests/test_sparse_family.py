"""The sparse-training family (docs/pruning.md): SNIP and SynFlow masks, RigL's and SET's drop/grow sets and their
per-layer counts, each against a slow float64 reference written from the paper with no code shared with pruning/
(a mask is a dict of Python sets, a ranking a full sort); the ERK allocation; the trainer's at-init hook; bad input.
Packed = one by one (tests/test_packing.py) and kill/resume (tests/test_resume.py) take these methods too."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train
from artifacts import paths
from models import build_model
from pruning import PRUNING_METHODS, build_pruner, measure_sparsity
from tests.script_runs import run_main
from utils.io import load_json, load_torch

pytestmark = pytest.mark.usefixtures("one_thread")
PRUNABLE = ["conv1.weight", "conv2.weight", "fc1.weight"]  # every conv and the hidden Linear; fc is the classifier


class Net(nn.Module):
    """Two convolutions with BatchNorm, a hidden Linear, the classifier: 36 + 216 + 48 prunable weights."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.fc1, self.fc = nn.Linear(6, 8), nn.Linear(8, 10)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(F.relu(self.fc1(x.mean((2, 3)))))


def net():
    torch.manual_seed(0)
    model = Net().double()
    with torch.no_grad():  # BatchNorm statistics and affine parameters away from their defaults: eval mode matters
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.2, 0.2)
    return model


def batches(n, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 1, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 10, (size,), generator=g))
            for _ in range(n)]


def prune_order(scores: dict, n_prune: int, first: set = frozenset()) -> set:
    """The n_prune lowest (layer, index) by score, ties in (layer, index) order; `first`: pruned before any."""
    keys = sorted(((0 if k in first else 1, s, PRUNABLE.index(k[0]), k[1]), k) for k, s in scores.items())
    return {k for _, k in keys[:n_prune]}


def flat_scores(tensors: dict) -> dict:
    return {(n, i): float(v) for n, t in tensors.items() for i, v in enumerate(t.flatten().tolist())}


def as_sets(masks) -> set:
    return {(n, i) for n, m in zip(PRUNABLE, masks) for i, kept in enumerate(m.flatten().tolist()) if not kept}


# -- SNIP and SynFlow -----------------------------------------------------------------------------------------
def reference_snip(model, data, s) -> set:
    """Lee et al.: sensitivity |dL/dc| of a mask c = 1 on the weights (w -> c * w), gradients of the mini-batches
    summed (Synaptic-Flow), network in eval mode; the round(s * N) least sensitive connections pruned."""
    model = copy.deepcopy(model).eval()
    w = {n: model.get_parameter(n).detach() for n in PRUNABLE}
    c = {n: torch.ones_like(w[n], requires_grad=True) for n in PRUNABLE}
    total = {n: torch.zeros_like(w[n]) for n in PRUNABLE}
    for x, y in data:
        loss = F.cross_entropy(torch.func.functional_call(model, {n: c[n] * w[n] for n in PRUNABLE}, (x,)), y)
        for n, g in zip(PRUNABLE, torch.autograd.grad(loss, [c[n] for n in PRUNABLE])):
            total[n] += g
    scores = flat_scores({n: t.abs() for n, t in total.items()})
    return prune_order(scores, round(s * len(scores)))


def reference_synflow(model, s, rounds, shape) -> set:
    """Tanaka et al.: every parameter and buffer made |.|, eval mode, R = sum of the outputs on an all-ones input;
    the score of a connection is |dR/dc| for a mask c = 1 on it; round r prunes to 1 - (1 - s)^(r/n) of the
    weights, the pruned ones staying pruned."""
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    w = {n: model.get_parameter(n).detach() for n in PRUNABLE}
    total, pruned = sum(t.numel() for t in w.values()), set()
    for r in range(1, rounds + 1):
        keep = {n: torch.tensor([0.0 if (n, i) in pruned else 1.0 for i in range(w[n].numel())],
                                dtype=torch.float64).view(w[n].shape) for n in PRUNABLE}
        c = {n: torch.ones_like(w[n], requires_grad=True) for n in PRUNABLE}
        out = torch.func.functional_call(model, {n: c[n] * keep[n] * w[n] for n in PRUNABLE},
                                         (torch.ones(shape, dtype=torch.float64),))
        grads = torch.autograd.grad(out.sum(), [c[n] for n in PRUNABLE])
        scores = flat_scores({n: g.abs() for n, g in zip(PRUNABLE, grads)})
        s_r = s if r == rounds else 1 - (1 - s) ** (r / rounds)
        pruned = prune_order(scores, round(s_r * total), first=pruned)
    return pruned


@pytest.mark.parametrize("s", [0.5, 0.9])
def test_snip_masks_equal_the_reference(s):
    model, data = net(), batches(3)
    pruner = build_pruner("snip", model, s, 4, 0, options={"snip_batches": 2})
    before = copy.deepcopy(model.state_dict())
    pruner.at_init(iter(data))
    assert as_sets(pruner.mask_list) == reference_snip(net(), data[:2], s)  # two batches: the third unread
    assert as_sets(pruner.mask_list) != reference_snip(net(), data[:1], s)  # and the batch count matters
    assert sum(int((~m).sum()) for m in pruner.mask_list) == round(s * 300) and pruner.frozen
    for k, v in model.state_dict().items():  # nothing but the pruned weights changed (BatchNorm statistics too)
        m = pruner.masks.get(k)
        torch.testing.assert_close(v, before[k] if m is None else before[k] * m, rtol=0, atol=0)


@pytest.mark.parametrize("s, rounds", [(0.9, 100), (0.6, 7)])
def test_synflow_masks_equal_the_reference(s, rounds):
    model = net()
    pruner = build_pruner("synflow", model, s, 4, 0, options={"synflow_rounds": rounds})
    pruner.at_init(iter(batches(1)))
    expected = reference_synflow(net(), s, rounds, (1, 1, 6, 6))
    assert as_sets(pruner.mask_list) == expected
    assert len(expected) == round(s * 300)
    one_round = build_pruner("synflow", net(), s, 4, 0, options={"synflow_rounds": 1})
    one_round.at_init(iter(batches(1)))
    assert as_sets(one_round.mask_list) == reference_synflow(net(), s, 1, (1, 1, 6, 6)) != expected  # rounds matter


def test_at_init_must_run_before_the_first_step():
    pruner = build_pruner("snip", net(), 0.5, 4, 0)
    with pytest.raises(RuntimeError, match="at_init"):
        pruner.before_step(0)


# -- RigL and SET -----------------------------------------------------------------------------------------------
def reference_kept(shapes, s, density="erk"):
    """ERK (Evci et al. / rigl sparse_utils): density of layer l = eps * sum(shape) / prod(shape), the first layer
    and every layer whose density would exceed 1 dense (largest raw density first), eps such that the kept total is
    N - round(s N); returned as real numbers (the implementation rounds them)."""
    n = [math.prod(sh) for sh in shapes]
    raw = [sum(sh) / math.prod(sh) if density == "erk" else 1.0 for sh in shapes]
    kept, dense = sum(n) - round(s * sum(n)), {0}
    while True:
        rest = [i for i in range(len(n)) if i not in dense]
        eps = (kept - sum(n[i] for i in dense)) / sum(raw[i] * n[i] for i in rest)
        over = [i for i in rest if eps * raw[i] > 1]
        if not over:
            return [n[i] if i in dense else eps * raw[i] * n[i] for i in range(len(n))]
        dense.add(max(over, key=lambda i: raw[i]))


@pytest.mark.parametrize("density", ["erk", "uniform"])
@pytest.mark.parametrize("arch, s", [("resnet", 0.9), ("mlp", 0.3)])  # the MLP's first layer holds most weights
def test_per_layer_counts_are_erk_and_the_total_exact(arch, s, density):
    torch.manual_seed(0)
    model = build_model("resnet", 20, 1, 10, 1) if arch == "resnet" else build_model("mlp", 2, 1, 10, 64)
    pruner = build_pruner("rigl", model, s, 4, 0, epochs=2, options={"density": density})
    ideal = reference_kept([tuple(p.shape) for p in pruner.params], s, density)
    assert all(abs(k - e) < 1 for k, e in zip(pruner.kept, ideal))
    assert pruner.kept[0] == pruner.params[0].numel()  # the first layer dense
    assert sum(pruner.kept) == pruner.numel - round(s * pruner.numel)
    assert [int(m.sum()) for m in pruner.mask_list] == pruner.kept
    assert measure_sparsity(model)["sparsity"] >= round(s * pruner.numel) / pruner.numel


def run_dynamic(method, steps=12, per_epoch=4, freq=3, s=0.7):
    """A float64 run of Net with SGD (momentum, weight decay); per step, what the reference needs."""
    model = net()
    pruner = build_pruner(method, model, s, per_epoch, 0, None, freq, epochs=steps // per_epoch, seed=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    pruner.slot = lambda kind: ([p.grad for p in pruner.params] if kind == "grad"
                                else [opt.state.get(p, {}).get("momentum_buffer") for p in pruner.params])
    data, log = batches(steps, seed=1), []
    for it, (x, y) in enumerate(data):
        model.train()
        pruner.before_step(it)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        rec = {"it": it, "mask": [m.clone() for m in pruner.mask_list], "w": [p.detach().clone() for p in pruner.params],
               "grad": [p.grad.clone() for p in pruner.params], "rng": pruner.gen.get_state()}
        stepped = pruner.after_backward()
        if stepped:
            opt.step()
        rec["w_stepped"] = [p.detach().clone() for p in pruner.params] if stepped else None
        if method == "set":  # SET scores the stepped weights: what the parameters hold before its update
            rec["w_set"] = [p.detach().clone() * m for p, m in zip(pruner.params, pruner.fmask_list)]
            rec["rng"] = pruner.gen.get_state()
        pruner.after_optimizer_step()
        rec.update(stepped=stepped, new_mask=[m.clone() for m in pruner.mask_list],
                   w_after=[p.detach().clone() for p in pruner.params],
                   mom=[opt.state[p]["momentum_buffer"].clone() if p in opt.state else None for p in pruner.params])
        log.append(rec)
    return pruner, log


def reference_update(method, rec, end_iter, alpha=0.3):
    """Evci et al. eq. (1) and Algorithm 1: f(t) = alpha/2 (1 + cos(pi t / T_end)); per layer k = floor(f * active)
    active weights of smallest |w| dropped (ties: lower index first), k grown among the inactive-after-drop by the
    largest |gradient| (RigL) or a uniform random score (SET, the pruner's stream), ties: higher index first."""
    f = alpha / 2 * (1 + math.cos(math.pi * rec["it"] / end_iter))
    gen = torch.Generator()
    gen.set_state(rec["rng"])
    new_masks, grown_all = [], []
    for i, mask in enumerate(rec["mask"]):
        m = mask.flatten().tolist()
        w = (rec["w_set"] if method == "set" else rec["w"])[i].flatten().tolist()
        active = [j for j, a in enumerate(m) if a]
        k = math.floor(f * len(active))
        dropped = {j for _, j in sorted((abs(w[j]), j) for j in active)[:k]}
        score = (rec["grad"][i].abs() if method == "rigl" else
                 torch.rand(mask.shape, generator=gen, dtype=torch.float64)).flatten().tolist()
        candidates = [j for j in range(len(m)) if not m[j] or j in dropped]
        grown = {j for _, j in sorted(((score[j], j) for j in candidates), reverse=True)[:k]}
        new = (set(active) - dropped) | grown
        new_masks.append(torch.tensor([j in new for j in range(len(m))]).view(mask.shape))
        grown_all.append(torch.tensor([j in grown and not m[j] for j in range(len(m))]).view(mask.shape))
    return new_masks, grown_all


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_drop_and_grow_sets_equal_the_reference_at_every_update(method):
    pruner, log = run_dynamic(method)
    end_iter = int(0.75 * 12)  # 9: updates at steps 0, 3, 6, 9
    updates = [r for r in log if r["it"] % 3 == 0 and r["it"] <= end_iter]
    assert [r["it"] for r in updates] == [0, 3, 6, 9]
    changed = 0
    for rec in log:
        if rec in updates:
            masks, grown = reference_update(method, rec, end_iter)
            assert all(torch.equal(a, b) for a, b in zip(rec["new_mask"], masks)), rec["it"]
            changed += sum(int(g.sum()) for g in grown)
            for w, g, mom in zip(rec["w_after"], grown, rec["mom"]):
                assert (w[g] == 0).all()  # a new connection starts at exactly zero ...
                if mom is not None:
                    assert (mom[g] == 0).all()  # ... with no momentum
            assert rec["stepped"] == (method == "set")  # RigL's update replaces the optimizer step
            if method == "rigl":  # so the kept weights did not move, and the dropped ones are zero
                for w0, w1, m in zip(rec["w"], rec["w_after"], rec["new_mask"]):
                    assert torch.equal(w1, torch.where(m & (w0 != 0), w0, torch.zeros_like(w0)))
        else:
            assert all(torch.equal(a, b) for a, b in zip(rec["mask"], rec["new_mask"])), rec["it"]
            assert rec["stepped"]
        assert [int(m.sum()) for m in rec["new_mask"]] == pruner.kept  # per-layer counts constant
        assert all((w[~m] == 0).all() for w, m in zip(rec["w_after"], rec["new_mask"]))
    assert changed > 0  # the topology did change: the comparison covered growth
    assert pruner.end_epoch(2)["total_refreshes"] == 4


def test_a_grown_rigl_weight_is_exactly_zero_after_its_update():
    """At an update step RigL grows by gradient: the new connections hold +0.0 when the step ends."""
    pruner, log = run_dynamic("rigl")
    rec = log[0]
    grown = [n & ~o for n, o in zip(rec["new_mask"], rec["mask"])]
    assert sum(int(g.sum()) for g in grown) > 0
    assert all((w[g] == 0).all() for w, g in zip(rec["w_after"], grown))


# -- through the trainer ------------------------------------------------------------------------------------------
TINY = ["--dataset", "digits", "--epochs", "2", "--batch-size", "32", "--num-shadows", "1", "--sens-draws", "1",
        "--device", "cpu", "--prune-freq", "4"]


def test_each_method_trains_and_saves_exactly_sparse_models(tmp_path, capsys):
    """run_experiment.py per method: the saved masks prune exactly round(s N), per layer as the allocation says
    (rigl, set), saved weights zero wherever masked, and the history counts the updates."""
    import run_experiment

    for method in ("snip", "synflow", "rigl", "set"):
        argv = [*TINY, "--prune", "--prune-method", method, "--sparsity", "0.8", "--runs-dir", str(tmp_path)]
        if method == "synflow":
            argv += ["--synflow-rounds", "10"]
        code, _, err = run_main(run_experiment.main, argv, capsys)
        assert code == 0, err
        exp = paths.experiment_dir(tmp_path, method, 0.8, "digits")
        for i in range(2):
            ck = load_torch(paths.model_dir(exp, i) / paths.BEST_MODEL)
            masks, state = ck["masks"], ck["state_dict"]
            total = sum(m.numel() for m in masks.values())
            assert sum(int((~m).sum()) for m in masks.values()) == round(0.8 * total), method
            assert all((state[k][~m] == 0).all() for k, m in masks.items())
            summary = load_json(paths.model_dir(exp, i) / paths.SUMMARY)
            assert summary["measured_sparsity"] >= round(0.8 * total) / total - 1e-12
            if method in ("rigl", "set"):
                model = build_model("resnet", 20, 1, 10, 1)
                expected = build_pruner(method, model, 0.8, 4, 0, epochs=2).kept  # counts: a function of shapes only
                assert [int(m.sum()) for m in masks.values()] == expected
                assert summary["history"][-1]["total_refreshes"] >= 2


def test_packed_snip_sees_each_models_own_batches(tmp_path):
    """Two models of a pack get different SNIP masks (their own data and initialisation)."""
    from configs.config import ExperimentConfig
    from data import load_dataset
    from training.membership import keep_matrix
    from training.trainer import Trainer

    cfg = ExperimentConfig(dataset="digits", epochs=1, batch_size=16, pool_size=240, device="cpu", num_shadows=1,
                           method="snip", sparsity=0.8, runs_dir=str(tmp_path)).resolved()
    ds = load_dataset(cfg)
    tr = Trainer(cfg, ds, keep_matrix(2, len(ds.y_train), cfg.mia_seed), [0, 1])
    tr.fit()
    a, b = (m.pruner.mask_list[1] for m in tr.seats)
    assert not torch.equal(a, b)


# -- bad input ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--prune", "--prune-method", "static", "--sparsity", "0.5", "--snip-batches", "2"], "--snip-batches applies to --prune-method snip only"),
    (["--drop-fraction", "0.2"], "--drop-fraction applies to --prune-method rigl, set only"),
    (["--prune", "--prune-method", "snip", "--sparsity", "0.5", "--snip-batches", "0"], "--snip-batches must be at least 1"),
    (["--prune", "--prune-method", "synflow", "--sparsity", "0.5", "--synflow-rounds", "0"], "--synflow-rounds must be at least 1"),
    (["--prune", "--prune-method", "rigl", "--sparsity", "0.5", "--drop-fraction", "1.5"], "--drop-fraction must be in (0, 1)"),
    (["--prune", "--prune-method", "set", "--sparsity", "0.5", "--density", "random"], "unknown --density 'random'"),
    (["--prune", "--prune-method", "snip", "--sparsity", "0.5", "--defense", "dp"], "epsilon would not hold"),
    (["--prune", "--prune-method", "rigl", "--sparsity", "0.5", "--defense", "dp"], "epsilon would not hold"),
])
def test_bad_flags_are_one_line(tmp_path, args, needle, capsys):
    import run_experiment

    code, _, err = run_main(run_experiment.main, ["--dataset", "digits", "--runs-dir", str(tmp_path), *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_an_allocation_that_cannot_be_met_is_one_line(tmp_path, capsys):
    """ResNet-20's first conv (144 weights on digits) is dense: at sparsity 0.9999 only 27 weights are kept."""
    import run_experiment

    code, _, err = run_main(run_experiment.main, [*TINY, "--prune", "--prune-method", "rigl", "--sparsity", "0.9999",
                                               "--runs-dir", str(tmp_path)], capsys)
    assert code == 2 and "lower --sparsity" in err and len(err.strip().splitlines()) == 1, err


def test_help_names_the_methods_and_their_flags():
    text = train.build_parser().format_help()
    for word in ("snip", "synflow", "rigl", "set", "--snip-batches", "--synflow-rounds", "--drop-fraction", "--density"):
        assert word in text, word
    assert not {"snip", "synflow", "rigl", "set"} & set(train.parse([]).methods)  # extras: the default study as it was


def test_null_case_for_every_attack_on_a_rigl_configuration(tmp_path):
    """A RigL study on digits (train.py, 4 models), membership permuted: every attack at AUC ~0.5."""
    import test_mia
    from mia.attacks import ATTACKS
    from mia.cli import settings_for

    runs = tmp_path / "runs"
    train.main(["--dataset", "digits", "--epochs", "3", "--batch-size", "64", "--num-shadows", "3", "--sens-draws", "2",
                "--sparsities", "0.5", "--device", "cpu", "--no-eval", "--methods", "rigl", "--runs-dir", str(runs)])
    rows = test_mia.null_rows(paths.experiment_dir(runs, "rigl", 0.5, "digits"), settings_for("cpu"), tmp_path)
    assert len(rows) == len(ATTACKS) and all(ok for _, ok, _ in rows), [r for r in rows if not r[1]]
