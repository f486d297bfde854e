"""Defenses (defenses/, docs/defenses.md): each loss equals its authors' code re-run model by model on fixed
float64 tensors, composes with pruning (a static mask survives), and is named, planned and validated as
one configuration field."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from artifacts import paths
from configs.config import ExperimentConfig, command_line
from defenses import DEFENSES, build_loss
from utils.errors import UsageError

B, K, C = 7, 3, 5  # an odd batch: PPB leaves its last example out of the KL term


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(B, K, C, generator=g, dtype=torch.float64)).requires_grad_()
    return logits, torch.randint(0, C, (B, K), generator=g)


def _check(loss_fn, reference):
    """The packed loss [K] and its gradient equal the reference computed on each model's column alone."""
    logits, labels = _batch()
    got = loss_fn(logits, labels)
    (grad,) = torch.autograd.grad(got.sum(), logits)
    for k in range(K):
        z = logits[:, k].detach().clone().requires_grad_()
        want = reference(z, labels[:, k])
        (want_grad,) = torch.autograd.grad(want, z)
        torch.testing.assert_close(got[k], want, rtol=0, atol=1e-12)
        torch.testing.assert_close(grad[:, k], want_grad, rtol=0, atol=1e-12)
    return got


def _cfg(**kw):
    return ExperimentConfig(dataset="digits", epochs=4, device="cpu", **kw).resolved()


# -- known answers: each defense against its authors' code, one model at a time --------------------------

def test_ppb_is_mia_prunes_train_defend_ppb():
    def reference(outputs, targets, defend_arg=4.0):  # mia_prune base_model.train_defend_ppb, verbatim
        loss1 = F.cross_entropy(outputs, targets)
        ranked_outputs, _ = torch.topk(outputs, C, dim=-1)
        even_size = targets.size(0) // 2 * 2
        loss2 = F.kl_div(F.log_softmax(ranked_outputs[:even_size // 2], dim=-1),
                         F.softmax(ranked_outputs[even_size // 2:even_size], dim=-1), reduction="batchmean")
        return loss1 + defend_arg * loss2

    got = _check(lambda z, y: build_loss(_cfg(defense="ppb"))(z, y, 0), reference)
    assert (got > build_loss(_cfg())(*_batch(), 0)).all()  # the KL term is there (and positive)


@pytest.mark.parametrize("epoch", [0, 1, 2, 3])
def test_relaxloss_is_the_authors_rule_on_both_sides_of_alpha(epoch):
    logits, labels = _batch()
    ce = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(0).detach()
    alpha = float(ce.median())  # one model above alpha, one below (the third at it: not above, flattened)
    assert (ce > alpha).any() and (ce < alpha).any()

    def reference(outputs, targets, upper=0.8):  # DingfanChen/RelaxLoss source/cifar/defense/relaxloss.py
        loss_ce_full = F.cross_entropy(outputs, targets, reduction="none")
        loss_ce = torch.mean(loss_ce_full)
        if epoch % 2 == 0:
            return (loss_ce - alpha).abs()
        if loss_ce > alpha:
            return loss_ce
        pred = torch.argmax(outputs, dim=1)
        correct = torch.eq(pred, targets).double()
        confidence_target = F.softmax(outputs, dim=1)[torch.arange(targets.size(0)), targets]
        confidence_target = torch.clamp(confidence_target, min=0., max=upper)
        confidence_else = (1.0 - confidence_target) / (C - 1)
        onehot = F.one_hot(targets, C).double()
        soft_targets = onehot * confidence_target.unsqueeze(-1).repeat(1, C) \
            + (1 - onehot) * confidence_else.unsqueeze(-1).repeat(1, C)
        soft_ce = -(soft_targets * F.log_softmax(outputs, dim=1)).sum(1)  # their CrossEntropy_soft
        return torch.mean((1 - correct) * soft_ce - 1. * loss_ce_full)

    cfg = _cfg(defense="relaxloss", relaxloss_alpha=alpha, relaxloss_upper=0.8)
    got = _check(lambda z, y: build_loss(cfg)(z, y, epoch), reference)
    if epoch % 2:  # plain descent above alpha, flattening (another loss) at or below it
        assert torch.equal(got[ce > alpha], ce[ce > alpha]) and (got[ce <= alpha] != ce[ce <= alpha]).all()


def test_label_smoothing_against_its_formula_and_none_is_plain_cross_entropy():
    eps = 0.3

    def smoothed(z, y):  # (1 - eps) CE + eps * mean over classes of -log p
        log_p = F.log_softmax(z, -1)
        return ((1 - eps) * -log_p[torch.arange(len(y)), y] + eps * -log_p.mean(-1)).mean()

    _check(lambda z, y: build_loss(_cfg(defense="label_smoothing", label_smoothing_eps=eps))(z, y, 0), smoothed)
    _check(lambda z, y: build_loss(_cfg())(z, y, 0), lambda z, y: F.cross_entropy(z, y))


# -- configuration: defaults, validation, names, identity ---------------------------------------------------

def test_defaults_fill_only_the_chosen_defense():
    c = _cfg(defense="relaxloss")
    assert (c.relaxloss_alpha, c.relaxloss_upper, c.ppb_weight, c.label_smoothing_eps) == (1.0, 1.0, None, None)
    assert _cfg(defense="ppb").ppb_weight == 4.0 and _cfg().defense == "none"


@pytest.mark.parametrize("kw, message", [
    (dict(defense="dp2"), "unknown --defense 'dp2'; valid: none, ppb, relaxloss, label_smoothing, dp"),
    (dict(defense="ppb", ppb_weight=-1.0), "--ppb-weight must be >= 0, got -1.0"),
    (dict(defense="relaxloss", relaxloss_alpha=0.0), "--relaxloss-alpha must be > 0, got 0.0"),
    (dict(defense="relaxloss", relaxloss_upper=1.5), "--relaxloss-upper must be in (0, 1], got 1.5"),
    (dict(defense="label_smoothing", label_smoothing_eps=1.0), "--label-smoothing-eps must be in [0, 1), got 1.0"),
    (dict(ppb_weight=2.0), "--ppb-weight applies to --defense ppb only, not --defense none"),
    (dict(defense="ppb", relaxloss_alpha=1.0), "--relaxloss-alpha applies to --defense relaxloss only, not --defense ppb"),
])
def test_bad_defense_input_is_one_line(kw, message):
    with pytest.raises(UsageError) as e:
        _cfg(**kw)
    assert str(e.value) == message


def test_bad_defense_on_the_command_line_exits_2_with_one_line(capsys):
    import run_experiment

    with pytest.raises(SystemExit) as e:
        run_experiment.main(["--dataset", "digits", "--defense", "relaxloss", "--relaxloss-alpha", "-1"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: --relaxloss-alpha must be > 0, got -1.0\n"


def test_a_defended_configuration_has_its_own_name_directory_and_recipe(tmp_path):
    from training.experiment import experiment_dir, recipe_diff

    dense, ppb = _cfg(), _cfg(defense="ppb")
    pruned = _cfg(defense="ppb", method="dpf", sparsity=0.9)
    assert (dense.name, ppb.name, pruned.name) == ("dense", "dense+ppb", "dpf_0.9+ppb")
    assert experiment_dir(ppb).relative_to(ppb.runs_dir).as_posix() == "dense+ppb/digits"
    assert experiment_dir(pruned).relative_to(pruned.runs_dir).as_posix() == "dpf+ppb/sparsity_0.9/digits"
    assert experiment_dir(dense) == paths.experiment_dir(dense.runs_dir, "dense", 0.0, "digits")  # unchanged
    # a changed parameter is another recipe: the run directory refuses it instead of reusing it
    assert recipe_diff(ppb.recipe(), _cfg(defense="ppb", ppb_weight=2.0)) == ["ppb_weight: 4.0 there vs 2.0 asked"]
    # a recorded config without the defense fields (written before defenses) is the undefended recipe
    old = {k: v for k, v in dense.recipe().items() if k not in ("defense", "ppb_weight")}
    assert ExperimentConfig.from_dict(old).resolved().recipe() == dense.recipe()
    # the command that trains it again names the defense, and a parameter only where it is not the default
    assert "--defense ppb" in command_line(ppb) and "--ppb-weight" not in command_line(ppb)
    assert "--ppb-weight 2.0" in command_line(_cfg(defense="ppb", ppb_weight=2.0))


def test_defenses_are_a_study_axis():
    from training.study import plan_study

    base = ExperimentConfig(dataset="digits", epochs=4, ppb_weight=2.0)
    configs = plan_study(base, ["dense", "static"], [0.9], ["none", "ppb", "relaxloss"])
    assert [c.name for c in configs] == ["dense", "dense+ppb", "dense+relaxloss",
                                         "static_0.9", "static_0.9+ppb", "static_0.9+relaxloss"]
    assert [c.ppb_weight for c in configs] == [None, 2.0, None] * 2  # the study's --ppb-weight reaches ppb only
    assert [c.relaxloss_alpha for c in configs] == [None, None, 1.0] * 2
    with pytest.raises(UsageError, match="--ppb-weight applies to defense ppb, which is not in --defenses none relaxloss"):
        plan_study(base, ["dense"], [0.9], ["none", "relaxloss"])
    with pytest.raises(UsageError, match="unknown defense 'ppd'"):
        plan_study(base, ["dense"], [0.9], ["ppd"])
    packed = plan_study(dataclasses.replace(base, ppb_weight=None, pack=9), ["dense"], [0.9], ["none", "dp"])
    assert [(c.name, c.pack) for c in packed] == [("dense", 9), ("dense+dp", 1)]  # dp trains one model at a time


def test_train_py_takes_defense_or_defenses_not_both(capsys, tmp_path):
    import train

    runs = ["--runs-dir", str(tmp_path / "runs")]  # never the checkout's runs/ (a user's quick preset may be there)
    with pytest.raises(SystemExit) as e:
        train.main(["--dataset", "digits", "--defense", "ppb", "--defenses", "none", "ppb", "--dry-run", *runs])
    assert e.value.code == 2 and "not both" in capsys.readouterr().err
    train.main(["--dataset", "digits", "--methods", "dense", "--defenses", "none", "ppb", "--num-shadows", "1", "--dry-run",
                *runs])
    out = capsys.readouterr().out
    assert "2 configurations x 2 models" in out and "dense+ppb model 1" in out


# -- composition with pruning: a static mask survives every defense ------------------------------------------

@pytest.mark.parametrize("defense", [d for d in DEFENSES if d != "none"])
def test_a_static_model_keeps_its_exact_mask_under_every_defense(defense, one_thread):
    from data import load_dataset
    from pruning import measure_sparsity
    from training.trainer import Trainer

    cfg = dataclasses.replace(_cfg(defense=defense, method="static", sparsity=0.9), pool_size=64,
                              epochs=2, batch_size=16, layers=20, lr=0.05)
    ds = load_dataset(cfg)
    keep = np.zeros((2, 64), bool)
    keep[0, :32], keep[1, 32:] = True, True
    # two models packed as one network (the [B, K, C] path), or one for a defense that trains one at a time (dp)
    tr = Trainer(cfg, ds, keep, [0] if DEFENSES[defense].per_example else [0, 1])
    masks = [{k: v.clone() for k, v in m.pruner.masks.items()} for m in tr.seats]
    results = tr.fit()
    for m, mask, res in zip(tr.seats, masks, results):
        assert all(torch.equal(mask[k], m.pruner.masks[k]) for k in mask)
        for entry in (res["best"], res["last"]):
            assert all(torch.equal(entry["masks"][k], mask[k]) for k in mask)
        pruned = sum(int((v == 0).sum()) for v in mask.values()) / sum(v.numel() for v in mask.values())
        assert measure_sparsity(m.model)["sparsity"] == pruned == pytest.approx(0.9, abs=1e-3)
        losses = [r["train_loss"] for r in res["history"]]
        assert np.isfinite(losses).all() and losses[0] != losses[1]  # it trained


# -- the null case on a defended configuration --------------------------------------------------------------

def test_every_attack_is_at_chance_on_a_null_copy_of_a_defended_configuration(tmp_path, one_thread):
    """test_mia.py's null copy (membership permuted on disk) of a dense+relaxloss study: the real evaluation
    gives every attack an AUC within 4 standard errors of 0.5. RelaxLoss, whose loss goes up and down
    with the epoch, is the defense most unlike plain training."""
    import test_mia
    import train
    from mia.attacks import ATTACKS, AttackSettings

    from mia.evaluate import evaluate_experiment

    runs = tmp_path / "runs"
    train.main(["--dataset", "digits", "--methods", "dense", "--defenses", "none", "relaxloss", "--pool-size", "300",
                "--epochs", "3", "--batch-size", "32", "--num-shadows", "4", "--sens-draws", "2", "--pack", "5",
                "--no-eval", "--runs-dir", str(runs)])
    exp = runs / "dense+relaxloss" / "digits"
    rows = test_mia.null_rows(exp, AttackSettings(), tmp_path)
    assert len(rows) == len(ATTACKS)  # every attack ran
    assert all(ok for _, ok, _ in rows), [r for r in rows if not r[1]]
    # the non-adaptive attacker: the defended target attacked with the undefended configuration's shadows
    res = evaluate_experiment(exp, ["loss", "lira"], "0", shadows_from=runs / "dense" / "digits")
    assert (res["method"], res["defense"], res["shadows"], res["num_shadows"]) == ("dense+relaxloss", "relaxloss", "dense", 4)
    assert not res["errors"] and 0 <= res["attacks"]["loss"]["mean"]["eps_lower_bound"] < 5


def test_the_report_pairs_each_defended_configuration_with_its_undefended_one(tmp_path):
    from analysis.compare import Evaluated, default_pairs

    def ev(method, sparsity, defense="none"):
        name = paths.config_name(method, sparsity, defense)
        res = {"experiment": name, "method": paths.method_label(method, defense), "defense": defense,
               "sparsity": sparsity, "dataset": "digits"}
        return Evaluated(res, tmp_path / name)

    evals = [ev("dense", 0.0), ev("dense", 0.0, "ppb"), ev("dpf", 0.9), ev("dpf", 0.9, "ppb"), ev("static", 0.9, "dp")]
    listed = [(a.name, b.name) for a, b in default_pairs(evals)]
    pairs = set(listed)
    assert {("dense+ppb", "dense"), ("dpf_0.9+ppb", "dpf_0.9"), ("dpf_0.9", "dense")} <= pairs
    assert ("static_0.9+dp", "dense") in pairs and not any(b == "static_0.9" for _, b in pairs)  # no undefended static
    assert listed.count(("dense+ppb", "dense")) == 1 and listed.count(("dpf_0.9+ppb", "dpf_0.9")) == 1


def test_the_privacy_utility_plot_draws_defended_configurations_apart():
    import pandas as pd

    from analysis.plots import privacy_utility_figure

    df = pd.DataFrame({"experiment": ["dense", "dense+ppb", "dpf_0.9", "dpf_0.9+ppb"],
                       "method": ["dense", "dense+ppb", "dpf", "dpf+ppb"], "defense": ["none", "ppb", "none", "ppb"],
                       "sparsity": [0.0, 0.0, 0.9, 0.9], "test_acc": [0.9, 0.85, 0.8, 0.75],
                       "lira_auc": [0.7, 0.6, 0.65, 0.55]})
    lines = {ln.get_label(): ln for ln in privacy_utility_figure(df, "auc").axes[0].get_lines()}
    assert (lines["dense"].get_marker(), lines["dpf"].get_marker()) == ("*", "o")
    assert {lines[m].get_marker() for m in ("dense+ppb", "dpf+ppb")} == {"D"}
    assert {lines[m].get_linestyle() for m in ("dense+ppb", "dpf+ppb")} == {"--"}


def test_the_defense_overhead_benchmark_runs(monkeypatch, capsys, one_thread):
    """benchmarks/defense_overhead.py at tiny sizes, so the command in docs/benchmarks.md cannot rot."""
    import sys

    from benchmarks import defense_overhead

    monkeypatch.setattr(sys, "argv", ["defense_overhead.py", "--pool-size", "64", "--epochs", "1", "--rounds", "1",
                                      "--batch-size", "16"])
    defense_overhead.main()
    out = capsys.readouterr().out
    assert all(f"  {d} " in out for d in DEFENSES) and "x 1.00 time vs none" in out and "none, as dp" in out
