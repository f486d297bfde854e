"""Prune a trained model, then fine-tune it (pruning/criteria.py, training/sources.py, docs/pruning.md): masks
against from-scratch computations, pruned channels exactly zero, a float64 fine-tuning run against a plain loop,
the study as a dependency graph (local and Ray), stale sources, --shadows-from, the null case and bad input."""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import train
from artifacts import paths
from models import build_model
from pruning import PRUNING_METHODS, build_pruner
from pruning.criteria import CRITERIA, conv_batchnorms, filter_sparsity
from tests.test_pruning import batch, sgd, tiny_resnet
from tests.test_pruning import train as train_steps
from utils.io import load_json, load_torch, save_torch
from tests.script_runs import run_main

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = paths.Path(__file__).resolve().parents[1]
FINETUNED = [m for m, spec in PRUNING_METHODS.items() if spec.source]


def trained_like(model: nn.Module) -> nn.Module:
    """Weights and BatchNorm scales far from their initialisation, as a trained model's: the criteria must
    rank what the model holds, and |gamma| = 1 everywhere (the initialisation) would make slimming all ties."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


# -- the masks: plain, from-scratch computations ---------------------------------------------------------
def ref_prune(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Keep-mask removing the n smallest scores, ties in index order (a stable sort)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.flatten(), stable=True)[:n]] = False
    return keep.view(scores.shape)


def ref_pairs(model) -> dict[str, str]:
    """conv -> BatchNorm of the CIFAR ResNet, written out by its naming: convK -> bnK, shortcut.0 -> shortcut.1."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {n: n[:-len("shortcut.0")] + "shortcut.1" if n.endswith("shortcut.0") else n.replace("conv", "bn")
            for n in names}


def reference_masks(model, method: str, s: float, scope: str = "global") -> dict[str, torch.Tensor]:
    mods = dict(model.named_modules())
    convs = [n for n, m in mods.items() if isinstance(m, nn.Conv2d)]
    w = {n: mods[n].weight.detach() for n in convs}
    crit = PRUNING_METHODS[method].criterion
    if crit == "magnitude":
        if scope == "layer":
            return {f"{n}.weight": ref_prune(w[n].abs(), round(s * w[n].numel())) for n in convs}
        flat = torch.cat([w[n].abs().flatten() for n in convs])
        keep = ref_prune(flat, round(s * flat.numel())).split([w[n].numel() for n in convs])
        return {f"{n}.weight": k.view(w[n].shape) for n, k in zip(convs, keep)}
    pairs = ref_pairs(model)
    if crit == "bn_gamma":
        gam = torch.cat([mods[pairs[n]].weight.detach().abs() for n in convs])
        kept = dict(zip(convs, ref_prune(gam, round(s * gam.numel())).split([w[n].shape[0] for n in convs])))
    else:
        p = {"filter_l1": 1, "filter_l2": 2}[crit]
        kept = {n: ref_prune(torch.stack([f.abs().pow(p).sum().pow(1 / p) for f in w[n]]), round(s * w[n].shape[0]))
                for n in convs}
    out = {}
    for n in convs:
        out[f"{n}.weight"] = kept[n].view(-1, 1, 1, 1).expand_as(w[n])
        out[f"{pairs[n]}.weight"] = out[f"{pairs[n]}.bias"] = kept[n]
    return out


@pytest.mark.parametrize("method, scope", [("finetune", "global"), ("finetune", "layer"), ("filter_l1", "global"),
                                           ("filter_l2", "global"), ("slim", "global")])
def test_masks_right_after_pruning_equal_a_from_scratch_computation(method, scope):
    model = trained_like(tiny_resnet())
    ref = reference_masks(model, method, 0.6, scope)
    pruner = build_pruner(method, model, 0.6, 10, 0, None, 16, scope)
    assert set(pruner.masks) == set(ref)
    for n, m in pruner.masks.items():
        assert torch.equal(m, ref[n]), n
    params = dict(model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in ref.items())  # pruned at once, before any step
    if scope == "layer":  # every layer exactly at the sparsity
        assert all(int((~m).sum()) == round(0.6 * m.numel()) for m in pruner.mask_list)


def test_filter_ties_are_broken_in_index_order_and_counts_are_exact():
    conv = nn.Conv2d(1, 5, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, 1.0, 1.0, 1.0, 3.0]).view(5, 1, 1, 1))
    model = nn.Sequential(conv, nn.BatchNorm2d(5))
    masks = CRITERIA["filter_l1"](model, 0.4, "global")  # 2 of 5: two of the three tied 1.0s, the first two
    assert masks["0.weight"].flatten().tolist() == [True, False, False, True, True]
    assert masks["1.weight"].tolist() == masks["1.bias"].tolist() == [True, False, False, True, True]


def test_convolutions_are_paired_with_the_batchnorm_that_reads_them():
    model = build_model("resnet", 20, 1, 10, 3)
    assert conv_batchnorms(model) == ref_pairs(model)
    wrn = build_model("wideresnet", 10, 1, 10, 3)  # pre-activation: conv1 -> bn2; conv2 feeds the residual sum
    pairs = conv_batchnorms(wrn)
    assert pairs["blocks.0.conv1"] == "blocks.0.bn2" and "blocks.0.conv2" not in pairs


class DepthwiseConcat(nn.Module):
    """A depthwise convolution and a concatenation (MobileNet, DenseNet): each channel is one filter."""

    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        a = F.relu(self.bn0(self.stem(x)))
        b = F.relu(self.bn1(self.dw(a)))
        return self.fc(torch.cat([a, b], 1).mean((2, 3)))


# -- a pruned channel is exactly zero, before and after fine-tuning ---------------------------------------
def _channel_outputs(model, x) -> dict[str, torch.Tensor]:
    """Output of every conv's BatchNorm (its channels), captured by hooks."""
    mods, out = dict(model.named_modules()), {}
    hooks = [mods[bn].register_forward_hook(lambda _m, _i, o, c=conv: out.__setitem__(c, o.detach()))
             for conv, bn in conv_batchnorms(model).items()]
    model(x)
    for h in hooks:
        h.remove()
    return out


def _pruned_channels_are_zero(model, pruner) -> None:
    removed = {n[:-len(".weight")]: ~m.flatten(1).any(1) for n, m in pruner.masks.items() if m.dim() == 4}
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            outs = _channel_outputs(model, torch.randn(4, *model.input_shape) * 3)
        for conv, out in outs.items():
            assert (out[:, removed[conv]] == 0).all(), conv
        assert any(r.any() for r in removed.values())  # something was removed: the check means something


@pytest.mark.parametrize("method", ["filter_l1", "filter_l2", "slim"])
@pytest.mark.parametrize("arch", ["resnet", "depthwise_concat"])
def test_a_pruned_channel_outputs_exactly_zero_for_any_input_before_and_after_fine_tuning(method, arch):
    torch.manual_seed(0)
    model = trained_like(build_model("resnet", 20, 1, 10, 1) if arch == "resnet" else DepthwiseConcat())
    model.input_shape = (1, 8, 8) if arch == "resnet" else (3, 8, 8)
    pruner = build_pruner(method, model, 0.5, 10, 0, None, 16)
    _pruned_channels_are_zero(model, pruner)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model.train()
    for it in range(6):  # momentum and weight decay at work on the masked scales and shifts
        x, y = batch(it, (8, *model.input_shape))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        pruner.after_backward()
        opt.step()
        pruner.after_optimizer_step()
    _pruned_channels_are_zero(model, pruner)
    assert filter_sparsity(model) == pytest.approx(
        sum(int((~m.flatten(1).any(1)).sum()) for m in pruner.mask_list if m.dim() == 4)
        / sum(m.shape[0] for m in pruner.mask_list if m.dim() == 4))


# -- fine-tuning against a plain loop ------------------------------------------------------------------------
def reference_finetune(model, masks: dict, iters: int, lr=0.05, momentum=0.9, wd=5e-4):
    """Fine-tuning written out plainly: forward at W * m (every masked parameter: conv filters, BatchNorm
    scales and shifts), the gradient masked, SGD with momentum and weight decay, W re-zeroed after each step."""
    W = {n: p.detach().clone() for n, p in model.named_parameters()}
    m = {n: masks[n].to(W[n].dtype) if n in masks else torch.ones_like(W[n]) for n in W}
    buf = {}
    model.train()
    for it in range(iters):
        eff = {n: (W[n] * m[n]).requires_grad_(True) for n in W}
        x, y = batch(it)
        loss = F.cross_entropy(torch.func.functional_call(model, eff, (x.double(),)), y)
        for n, g in zip(eff, torch.autograd.grad(loss, list(eff.values()))):
            d = g * m[n] + wd * W[n]
            buf[n] = momentum * buf[n] + d if it else d
            W[n] = (W[n] - lr * buf[n]) * m[n]
    return W


@pytest.mark.parametrize("method, scope", [("finetune", "layer"), ("filter_l2", "global"), ("slim", "global")])
def test_a_float64_fine_tuning_run_equals_a_plain_loop(method, scope):
    model = trained_like(tiny_resnet()).double()
    ref_model = copy.deepcopy(model)
    masks = reference_masks(ref_model, method, 0.7, scope)
    pruner = build_pruner(method, model, 0.7, 10, 0, None, 16, scope)
    train_steps(model, pruner, sgd(model), 12, dtype=torch.float64)
    W = reference_finetune(ref_model, masks, 12)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p, W[n], rtol=1e-9, atol=1e-12, msg=n)
    assert all(torch.equal(a, masks[n]) for n, a in pruner.masks.items())  # the mask never moved


# -- the study as a dependency graph -------------------------------------------------------------------------
TINY = ["--dataset", "digits", "--epochs", "3", "--batch-size", "64", "--num-shadows", "3", "--sens-draws", "2",
        "--sparsities", "0.5", "--finetune-epochs", "2", "--device", "cpu", "--no-eval"]


def _cli(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _complete_time(exp, i) -> float:
    return (paths.model_dir(exp, i) / paths.COMPLETE).stat().st_mtime_ns


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """finetune and filter_l1 at 0.5 on digits, 4 models each: train.py adds and trains dense first."""
    runs = tmp_path_factory.mktemp("ft") / "runs"
    train.main([*TINY, "--methods", "finetune", "filter_l1", "--runs-dir", str(runs)])
    return runs


def test_dense_is_planned_and_trained_before_what_starts_from_it(study):
    dense = study / "dense" / "digits"
    for method in ("finetune", "filter_l1"):
        exp = study / method / "sparsity_0.5" / "digits"
        for i in range(4):
            assert _complete_time(dense, i) < _complete_time(exp, i)
            summary = load_json(paths.model_dir(exp, i) / paths.SUMMARY)
            ck = paths.model_dir(dense, i) / paths.BEST_MODEL
            assert summary["source"]["checkpoint"] == str(ck.relative_to(study))
            assert summary["history"][0]["lr"] == pytest.approx(0.01)  # the fine-tuning schedule: lr x gamma
            assert len(summary["history"]) == 2  # --finetune-epochs, not --epochs


def test_saved_masks_are_the_criterion_on_the_dense_checkpoint(study):
    """The fine-tuned model's mask (fixed from the first step) equals the criterion recomputed from scratch
    on the dense checkpoint it names; exactly round(0.5 x filters) filters of every conv removed."""
    for method in ("finetune", "filter_l1"):
        exp = study / method / "sparsity_0.5" / "digits"
        for i in (0, 2):
            dense = build_model("resnet", 20, 1, 10, 1)
            dense.load_state_dict(load_torch(paths.model_dir(study / "dense" / "digits", i) / paths.BEST_MODEL)["state_dict"])
            ck = load_torch(paths.model_dir(exp, i) / paths.BEST_MODEL)
            ref = reference_masks(dense, method, 0.5)
            assert set(ck["masks"]) == set(ref) and all(torch.equal(ck["masks"][n], ref[n]) for n in ref)
            state = ck["state_dict"]
            assert all((state[n][~m] == 0).all() for n, m in ref.items())
    summary = load_json(study / "filter_l1" / "sparsity_0.5" / "digits" / paths.SUMMARY)
    assert summary["filter_sparsity"] == 0.5  # every ResNet-20 conv has an even number of filters


def test_a_changed_dense_checkpoint_makes_the_fine_tuned_model_stale(study, tmp_path, capsys):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(study, runs)
    ck = paths.model_dir(runs / "dense" / "digits", 1) / paths.BEST_MODEL
    state = load_torch(ck)
    state["state_dict"]["fc.bias"] += 1.0
    save_torch(state, ck)
    argv = [*TINY, "--methods", "finetune", "--runs-dir", str(runs), "--skip-existing", "--dry-run"]
    code, out, err = run_main(train.main, argv, capsys)
    assert code == 0, err
    assert "(1 to run, 7 already complete)" in out and "finetune_0.5 model 1 is stale" in out
    (paths.model_dir(runs / "dense" / "digits", 2) / paths.COMPLETE).unlink()  # dense model 2 will be retrained
    code, out, err = run_main(train.main, argv, capsys)
    assert "(3 to run, 5 already complete)" in out, out  # dense 2, finetune 1 and 2


def test_the_ray_executor_starts_a_fine_tune_task_after_its_dense_source(tmp_path):
    """Two CPUs, one per task: without the dependency the fine-tune task would start beside the dense one
    and be refused by run_pack (its source not complete)."""
    pytest.importorskip("ray")
    runs = tmp_path / "runs"
    r = _cli("train.py", *TINY, "--num-shadows", "1", "--pool-size", "100", "--test-size", "60", "--epochs", "1", "--methods", "finetune", "--runs-dir", str(runs),
             "--executor", "ray", "--cpus-per-model", "1", "--pack", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    for i in range(2):
        assert _complete_time(runs / "dense" / "digits", i) < _complete_time(runs / "finetune" / "sparsity_0.5" / "digits", i)


# -- the attacker's knowledge, the null case -----------------------------------------------------------------
def test_shadows_from_dense_attacks_with_the_dense_models_and_names_them(study, tmp_path):
    from mia.evaluate import evaluate_all, shadows_dirs
    from mia.cli import settings_for

    exps = paths.find_experiments(study)
    resolved = shadows_dirs("dense", exps)
    assert resolved[study / "dense" / "digits"] is None  # dense keeps its own shadows
    assert resolved[study / "finetune" / "sparsity_0.5" / "digits"] == study / "dense" / "digits"
    results, failures = evaluate_all(exps, ["lira", "confidence"], "0,1", settings_for("cpu"), shadows_from="dense")
    assert not failures
    ft = next(r for r in results if r["method"] == "finetune")
    assert ft["experiment"] == "finetune_0.5@dense" and ft["shadows"] == "dense"
    assert ft["shadows_dir"] == str(study / "dense" / "digits") and ft["num_shadows"] == 3  # 4 dense models, the target's index left out


@pytest.mark.parametrize("shadows", ["own", "dense"])
def test_null_case_for_every_attack_on_a_fine_tuned_configuration(study, tmp_path, shadows):
    """Permuted membership (the same permutation for the target's and the shadows' configurations): every
    attack at AUC ~0.5, with mirrored shadows and with --shadows-from dense."""
    import test_mia
    from mia.attacks import ATTACKS
    from mia.cli import settings_for
    from mia.evaluate import evaluate_experiment

    exp = study / "filter_l1" / "sparsity_0.5" / "digits"
    null = test_mia.permute_membership(exp, tmp_path / "null_ft")
    src = None if shadows == "own" else test_mia.permute_membership(study / "dense" / "digits", tmp_path / "null_dense")
    res = evaluate_experiment(null, list(ATTACKS), "0", settings=settings_for("cpu"), shadows_from=src)
    assert not res["errors"], res["errors"]
    tol = test_mia.NULL_SIGMAS * test_mia.null_auc_sd(np.load(null / paths.KEEP_MATRIX)[0])
    for attack, r in res["attacks"].items():
        assert abs(r["mean"]["auc"] - 0.5) < tol, (attack, r["mean"]["auc"])


# -- bad input: one line, exit 2, nothing written lost ----------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--prune", "--prune-method", "magic", "--sparsity", "0.5"], "unknown --prune-method 'magic'"),
    (["--prune", "--prune-method", "dpf", "--sparsity", "0.5", "--prune-scope", "layer"], "--prune-scope layer applies to"),
    (["--prune", "--prune-method", "static", "--sparsity", "0.5", "--finetune-epochs", "3"], "--finetune-epochs applies to"),
    (["--prune", "--prune-method", "finetune", "--sparsity", "0.5", "--finetune-lr", "0"], "--finetune-lr must be positive"),
    (["--finetune-epochs", "3"], "apply to pruned configurations"),
])
def test_bad_fine_tune_flags_are_one_line(tmp_path, args, needle, capsys):
    import run_experiment

    code, _, err = run_main(run_experiment.main, ["--dataset", "digits", "--runs-dir", str(tmp_path), *args], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_a_structured_sparsity_that_empties_a_layer_is_one_line(study, tmp_path, capsys):
    import shutil

    import run_experiment

    runs = tmp_path / "runs"
    shutil.copytree(study / "dense", runs / "dense")
    code, _, err = run_main(run_experiment.main, [
        "--dataset", "digits", "--epochs", "3", "--batch-size", "64", "--num-shadows", "3", "--prune", "--prune-method",
        "filter_l1", "--sparsity", "0.99", "--model-index", "0", "--runs-dir", str(runs), "--device", "cpu"], capsys)
    assert code == 2 and "would remove every filter of layer conv1 (16)" in err, err
    assert len(err.strip().splitlines()) == 1


def test_no_train_source_names_the_missing_dense_models(tmp_path, capsys):
    import run_experiment

    code, _, err = run_main(run_experiment.main, [
        "--dataset", "digits", "--num-shadows", "2", "--prune", "--prune-method", "finetune", "--sparsity", "0.5",
        "--runs-dir", str(tmp_path / "runs"), "--no-train-source"], capsys)
    assert code == 2 and "starts from dense model(s) 0, 1, 2" in err and "--no-train-source" in err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_shadows_from_unknown_or_incompatible_is_one_line_and_keeps_the_tables(study, tmp_path, capsys):
    from mia import mia_wemem

    out = tmp_path / "results"
    argv = ["--runs-dir", str(study), "--results-dir", str(out), "--attacks", "confidence"]
    assert run_main(mia_wemem.main, argv, capsys)[0] == 0
    table = (out / "mia" / "wemem" / "wemem_mia_results.csv").read_text()
    code, _, err = run_main(mia_wemem.main, [*argv, "--shadows-from", "gmp_0.5"], capsys)
    assert code == 2 and "--shadows-from gmp_0.5: no such configuration" in err, err
    other = tmp_path / "other"
    train.main(["--dataset", "digits", "--pool-size", "100", "--epochs", "1", "--batch-size", "64", "--num-shadows", "3",
                "--sens-draws", "2", "--methods", "dense", "--mia-seed", "1", "--device", "cpu", "--no-eval",
                "--runs-dir", str(other)])
    code, _, err = run_main(mia_wemem.main, [*argv, "--shadows-from", str(other / "dense" / "digits")], capsys)
    assert code == 2 and "different keep matrices" in err, err
    assert (out / "mia" / "wemem" / "wemem_mia_results.csv").read_text() == table  # nothing written lost
    code, _, err = run_main(train.main, [*TINY, "--methods", "finetune", "--runs-dir", str(tmp_path / "x"),
                                      "--shadows-from", "slim_0.5"], capsys)
    assert code == 2 and "not a configuration of this study" in err and not (tmp_path / "x").exists()


def test_the_report_pairs_fine_tuned_configurations_by_the_registry():
    """Default pairs: every pruned configuration - dense, and at each sparsity each method - the methods its
    registry entry names (dpf - static, finetune - static, filter pruners - finetune); with --shadows-from
    dense the fine-tuned rows (finetune_0.7@dense) still pair with dense."""
    from analysis.compare import Evaluated, default_pairs

    def ev(name, method, s):
        return Evaluated({"experiment": name, "method": method, "sparsity": s, "dataset": "d"}, paths.Path("."))

    evals = [ev("dense", "dense", 0.0), ev("static_0.7", "static", 0.7), ev("finetune_0.7", "finetune", 0.7),
             ev("filter_l1_0.7", "filter_l1", 0.7), ev("slim_0.5@dense", "slim", 0.5)]
    pairs = {(a.name, b.name) for a, b in default_pairs(evals)}
    assert pairs == {("static_0.7", "dense"), ("finetune_0.7", "dense"), ("filter_l1_0.7", "dense"),
                     ("slim_0.5@dense", "dense"), ("finetune_0.7", "static_0.7"), ("filter_l1_0.7", "finetune_0.7")}


def test_a_resumable_state_of_a_fine_tuning_from_another_source_is_refused(tmp_path, capsys):
    """A fine-tuning killed mid-run, its dense source retrained since: the state would continue the old
    fine-tuning, so it is refused (one line) and the model starts again from the new source."""
    from configs.config import ExperimentConfig
    from data import load_dataset
    from training import resume
    from training.membership import keep_matrix
    from training.trainer import Trainer

    cfg = ExperimentConfig(dataset="digits", pool_size=64, epochs=2, batch_size=16, device="cpu", num_shadows=1,
                           method="finetune", sparsity=0.5, runs_dir=str(tmp_path)).resolved()
    ds = load_dataset(cfg)
    keep = keep_matrix(2, len(ds.y_train), cfg.mia_seed)
    dense = build_model("resnet", 20, 1, 10, 1).state_dict()
    tr = Trainer(cfg.fit_config(), ds, keep, [0], init={0: dense})
    tr.seats[0].cfg, tr.seats[0].source = cfg, {"sha256": "a"}
    tr.epochs_done = 1
    resume.save(tr, [tmp_path])
    assert resume.restore(tr, [tmp_path]) == 1  # the same source: resumes
    tr.seats[0].source = {"sha256": "b"}
    capsys.readouterr()
    assert resume.restore(tr, [tmp_path]) == 0
    assert "another source checkpoint" in capsys.readouterr().out
