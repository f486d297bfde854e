"""Iterative pruning of the trained dense model: imp and lth (pruning/iterative.py, docs/pruning.md "Iterative
pruning"). A float64 reference written from the papers (no code of pruning/) gives each round's sparsity and mask;
lth's rewound weights equal dense model i's saved rewind point on the survivors at every round; exact sparsity;
masks only shrink; kill and resume mid-round bitwise; the null case for every attack on imp; bad input."""
import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch

import train
from artifacts import paths
from configs.config import ExperimentConfig
from pruning import build_pruner
from run_experiment import run
from tests.test_pruning import tiny_resnet
from tests.test_resume import assert_same_models, model_dirs, run_counting_epochs, run_killed, tiny
from utils.errors import UsageError
from utils.io import load_json, load_torch

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the reference: the papers' procedure, written out -------------------------------------------------------
def ref_sparsities(s: float, rounds: int) -> list[float]:
    """WeMeM / equal-fraction rounds: after round r, a fraction (1 - s)^(r / R) of the weights is left."""
    return [1 - (1 - s) ** (r / rounds) for r in range(1, rounds)] + [s]


def ref_prune_round(weights: dict, masks: dict, s_r: float, scope: str) -> dict:
    """Remove survivors of smallest |w| until round(s_r x n) of the n weights (of all layers, or of each layer)
    are pruned; ties in index order (stable sort); a pruned weight stays pruned. |w| is ranked in float32, the
    precision the implementation ranks in (two float64 weights equal in float32 are a tie there)."""
    groups = [list(weights)] if scope == "global" else [[n] for n in weights]
    out = {}
    for names in groups:
        w = torch.cat([weights[n].abs().float().flatten() for n in names])
        keep = torch.cat([masks[n].flatten() for n in names]).clone()
        target = round(s_r * w.numel())
        order = torch.argsort(w, stable=True)
        survivors = order[keep[order]]  # in increasing |w|, ties in index order
        keep[survivors[:max(0, target - int((~keep).sum()))]] = False
        for n, k in zip(names, keep.split([weights[n].numel() for n in names])):
            out[n] = k.view(weights[n].shape)
    return out


def _prunable(model) -> dict:
    """Every conv weight of the CIFAR ResNet (no hidden Linear): the prunable set, by the model's own names."""
    return {f"{n}.weight": m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def _train_like(model, seed: int) -> None:
    """Stands for a round of training: every parameter and BatchNorm statistic moves."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.add_(torch.randn(v.shape, generator=g, dtype=v.dtype) * 0.1)


@pytest.mark.parametrize("method, scope, s, rounds", [("imp", "global", 0.8, 3), ("imp", "layer", 0.9, 5),
                                                      ("lth", "global", 0.9, 4)])
def test_each_round_prunes_to_the_reference_sparsity_and_mask(method, scope, s, rounds):
    """Per round: the mask is the reference's on the weights the round starts from, the sparsity exactly
    round(s_r x n), the mask only shrinks; lth's model is then its rewind point on the survivors (all else too)."""
    model = tiny_resnet().double()
    rewind = {k: v + 0.5 if v.is_floating_point() else v + 1 for k, v in model.state_dict().items()} \
        if method == "lth" else None
    epochs_per_round = 2
    pr = build_pruner(method, model, s, iters_per_epoch=3, target_epoch=0, scope=scope,
                      options={"prune_rounds": rounds, "rewind_epoch": 0}, epochs=rounds * epochs_per_round, rewind=rewind)
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in _prunable(model).items()}
    n_total = sum(w.numel() for w in masks.values())
    for r, s_r in enumerate(ref_sparsities(s, rounds)):
        _train_like(model, r)
        before = {n: w.detach().clone() for n, w in _prunable(model).items()}
        assert not pr.start_round(r * epochs_per_round + 1)  # mid-round: nothing happens
        assert pr.start_round(r * epochs_per_round)
        expected = ref_prune_round(before, masks, s_r, scope)
        for n in masks:
            assert torch.equal(pr.masks[n], expected[n]), (r, n)
            assert not (pr.masks[n] & ~masks[n]).any()  # only shrinks
        masks = expected
        pruned = sum(int((~m).sum()) for m in masks.values())
        if scope == "global":
            assert pruned == round(s_r * n_total) and pr.current == pytest.approx(s_r)
        state = model.state_dict()
        for n, w in _prunable(model).items():
            assert (w.detach()[~masks[n]] == 0).all()  # pruned weights exactly zero
            src = rewind[n] if rewind else before[n]
            assert torch.equal(w.detach()[masks[n]], src[masks[n]])
        if rewind:  # biases, BatchNorm: the rewind point's
            for k, v in rewind.items():
                if k not in masks:
                    assert torch.equal(state[k], v), k
    assert pr.at_target((rounds - 1) * epochs_per_round) and not pr.at_target((rounds - 1) * epochs_per_round - 1)


def test_round_counts_and_the_loop_schedule():
    """lth's default: the fewest rounds of at most 20% each (open_lth); the loop is R rounds of the recipe, the
    rate restarting each round (decays at or before the rewind epoch folded into the starting rate)."""
    from pruning.iterative import lth_rounds, round_schedule

    assert [lth_rounds(s) for s in (0.2, 0.36, 0.5, 0.9)] == [1, 2, 4, 11]
    assert all((1 - 0.2) ** lth_rounds(s) <= 1 - s + 1e-12 < (1 - 0.2) ** (lth_rounds(s) - 1) for s in (0.3, 0.9, 0.95))
    assert round_schedule(100, 0.1, [50, 75], 0.1, 0, 3) == (300, 0.1, [50, 75, 150, 175, 250, 275])
    assert round_schedule(100, 0.1, [50, 75], 0.1, 60, 2) == (80, 0.01, [15, 55])
    assert round_schedule(1, 0.01, [0, 0], 0.1, 0, 2) == (2, pytest.approx(1e-4), [])  # finetune-epochs 1
    cfg = ExperimentConfig(dataset="digits", epochs=10, method="lth", sparsity=0.9,
                           rewind_epoch=2).resolved()
    assert cfg.prune_rounds == 11 and cfg.fit_config().epochs == 11 * 8
    # validated only in the last round, from its first decay (epoch 5 of 10 = epoch 3 after the rewind to 2)
    assert cfg.fit_config().val_from == 10 * 8 + 3
    assert dataclasses.replace(cfg, val_from=8).fit_config().val_from == 10 * 8 + 6
    imp = ExperimentConfig(dataset="digits", epochs=10, method="imp", sparsity=0.5).resolved()
    assert imp.prune_rounds == 5 and imp.fit_config().epochs == 5 * imp.finetune_epochs == 25
    assert imp.fit_config().val_from == 4 * 5 + 2  # finetune milestones [2, 3]


# -- a study: dense, imp and lth on digits -------------------------------------------------------------------
STUDY = ["--dataset", "digits", "--pool-size", "600", "--epochs", "3", "--batch-size", "32", "--num-shadows", "3", "--sens-draws", "2",
         "--sparsities", "0.5", "--finetune-epochs", "1", "--prune-rounds", "2", "--rewind-epoch", "1",
         "--device", "cpu", "--no-eval"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """train.py --methods imp lth (dense trained first); every lth round's model state right after it starts."""
    from pruning.pruner import Pruner

    runs, seen, real = tmp_path_factory.mktemp("it") / "runs", [], Pruner.start_round

    def start_round(self, epoch):
        started = real(self, epoch)
        if started and self.method == "lth":
            seen.append((self, {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                         {k: m.clone() for k, m in self.masks.items()}))  # masks shrink in place: copies
        return started

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Pruner, "start_round", start_round)
        train.main([*STUDY, "--methods", "imp", "lth", "--runs-dir", str(runs)])
    return runs, seen


def test_lth_rewinds_to_the_dense_runs_saved_point_at_every_round(study):
    runs, seen = study
    dense = paths.experiment_dir(runs, "dense", 0.0, "digits")
    pruners = list(dict.fromkeys(pr for pr, _, _ in seen))  # one per model, in index order (one model a pack)
    assert len(pruners) == 4 and len(seen) == 4 * 2
    for pr, state, masks in seen:
        i = pruners.index(pr)
        point = load_torch(paths.model_dir(dense, i) / paths.REWIND)["states"][1]
        for k, v in point.items():
            expected = v.double().masked_fill(~masks[k], 0) if k in masks else v.double()
            assert torch.equal(state[k].double(), expected), (i, k)
    lth = paths.experiment_dir(runs, "lth", 0.5, "digits")
    record = load_json(lth / paths.SUMMARY)["source"]["rewind"]
    assert record["epoch"] == 1 and record["file"] == str((dense / paths.REWIND).relative_to(runs))


def test_saved_models_are_exactly_sparse_and_follow_the_rounds(study):
    runs, _ = study
    for method, epochs in (("imp", 1), ("lth", 2)):
        exp = paths.experiment_dir(runs, method, 0.5, "digits")
        for d in model_dirs_of(exp):
            summary = load_json(d / paths.SUMMARY)
            assert summary["measured_sparsity"] == pytest.approx(round(0.5 * summary["num_prunable"]) / summary["num_prunable"], abs=0)
            hist = summary["history"]
            assert len(hist) == 2 * epochs  # 2 rounds of the round's epochs
            assert [h["scheduled_sparsity"] for h in hist] == [pytest.approx(1 - 0.5 ** 0.5)] * epochs + [0.5] * epochs
            assert summary["best_epoch"] > epochs  # only the last round is eligible
            ck = load_torch(d / paths.BEST_MODEL)
            assert all((ck["state_dict"][k][~m] == 0).all() for k, m in ck["masks"].items())


def model_dirs_of(exp):
    return [paths.model_dir(exp, i) for i in range(4)]


def test_a_dense_run_without_rewind_points_regenerates_epoch_0_and_refuses_a_later_one(study, tmp_path):
    """Dense runs made before the artifact existed: --rewind-epoch 0 is the initialisation regenerated from the
    seed, equal to what a dense run of this code saved; epoch 1 is refused with one line naming the command."""
    from training.sources import load_rewind

    runs, _ = study
    old = tmp_path / "runs"
    shutil.copytree(runs / "dense", old / "dense")
    for f in (old / "dense").rglob(paths.REWIND):
        f.unlink()
    base = dict(dataset="digits", epochs=3, batch_size=64, num_shadows=3, sens_draws=2, device="cpu",
                method="lth", sparsity=0.5, prune_rounds=2, runs_dir=str(old))
    for i in range(4):
        state, record = load_rewind(ExperimentConfig(**base, rewind_epoch=0).resolved(), i)
        saved = load_torch(paths.model_dir(runs / "dense" / "digits", i) / paths.REWIND)["states"][0]
        assert record["file"] is None and state.keys() == saved.keys()
        assert all(torch.equal(state[k], saved[k]) for k in saved)
    with pytest.raises(UsageError) as e:
        load_rewind(ExperimentConfig(**base, rewind_epoch=1).resolved(), 2)
    assert paths.REWIND in str(e.value) and "--model-index 2" in str(e.value) and "\n" not in str(e.value)


def test_null_case_for_every_attack_on_an_imp_configuration(study, tmp_path):
    import test_mia
    from mia.attacks import ATTACKS
    from mia.cli import settings_for

    runs, _ = study
    rows = test_mia.null_rows(paths.experiment_dir(runs, "imp", 0.5, "digits"), settings_for("cpu"), tmp_path)
    assert len(rows) == len(ATTACKS) and all(ok for _, ok, _ in rows), [r for r in rows if not r[1]]


def test_shadows_from_dense_attacks_imp_and_lth_targets_with_the_dense_models(study):
    """The attacker who trained only dense shadows: model i of dense and of imp / lth share keep row i."""
    from mia.cli import settings_for
    from mia.evaluate import evaluate_all

    runs, _ = study
    exps = [paths.experiment_dir(runs, m, s, "digits") for m, s in (("dense", 0.0), ("imp", 0.5), ("lth", 0.5))]
    results, failures = evaluate_all(exps, ["lira_offline", "loss"], "0,1", settings_for("cpu"), shadows_from="dense")
    assert not failures
    by = {r["method"]: r for r in results}
    for m in ("imp", "lth"):
        assert by[m]["experiment"] == f"{m}_0.5@dense" and by[m]["shadows"] == "dense"
        assert by[m]["num_shadows"] == 3  # the 4 dense models, the target's own index left out
        assert all(np.isfinite(v["mean"]["auc"]) for v in by[m]["attacks"].values())


def test_imp_and_lth_with_a_defense_prune_the_undefended_dense_models_and_train_with_the_defense(tmp_path):
    """A defense applies to the rounds (as to fine-tuning, mia_prune's protocol); the source is the undefended dense run."""
    runs = tmp_path / "runs"
    train.main(["--dataset", "digits", "--pool-size", "160", "--epochs", "2", "--batch-size", "32", "--num-shadows", "1",
                "--sens-draws", "1", "--sparsities", "0.5", "--finetune-epochs", "1", "--prune-rounds", "2",
                "--methods", "imp", "lth", "--defenses", "label_smoothing", "--device", "cpu", "--no-eval",
                "--runs-dir", str(runs)])
    dense = paths.experiment_dir(runs, "dense", 0.0, "digits")
    for method in ("imp", "lth"):
        exp = paths.experiment_dir(runs, method, 0.5, "digits", "label_smoothing")
        assert load_json(exp / paths.CONFIG)["defense"] == "label_smoothing"
        for i in (0, 1):
            d = paths.model_dir(exp, i)
            summary = load_json(d / paths.SUMMARY)
            assert (d / paths.COMPLETE).exists()
            assert (runs / summary["source"]["checkpoint"]).resolve() == (paths.model_dir(dense, i) / paths.BEST_MODEL).resolve()
            assert summary["measured_sparsity"] == pytest.approx(round(0.5 * summary["num_prunable"]) / summary["num_prunable"], abs=0)


# -- resume inside a round -----------------------------------------------------------------------------------
def test_imp_killed_mid_round_and_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """2 rounds of 2 epochs: killed inside round 1 (after epoch 1) and at the round boundary (after epoch 2)."""
    kw = dict(method="imp", sparsity=0.8, prune_rounds=2, finetune_epochs=2)
    ref = tiny(tmp_path / "ref", **kw)
    run(ref)
    for k in (1, 2):
        cfg = tiny(tmp_path / f"killed_{k}", **kw)
        shutil.copytree(tmp_path / "ref" / "dense", tmp_path / f"killed_{k}" / "dense")  # the same dense source
        run_killed(cfg, k, monkeypatch)
        assert all((d / paths.RESUME).exists() for d in model_dirs(cfg))
        assert run_counting_epochs(dataclasses.replace(cfg, skip_existing=True), monkeypatch) == list(range(k, 4))
        assert_same_models(ref, cfg)


# -- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--methods", "lth", "--rewind-epoch", "3"], "past the dense run's 3 epochs"),
    (["--methods", "lth", "--rewind-epoch", "3", "--epochs", "8"], "not a rewind point"),
    (["--methods", "imp", "--prune-rounds", "0"], "--prune-rounds must be at least 1"),
])
def test_bad_iterative_flags_are_one_line_and_exit_2(args, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--dataset", "digits", "--epochs", "3", "--sparsities", "0.5", "--dry-run",
                    "--runs-dir", str(tmp_path), *args])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and len(err.splitlines()) == 1, err


def test_flags_of_other_methods_are_refused_for_a_configuration():
    lth = dict(dataset="digits", epochs=3, method="lth", sparsity=0.5)
    with pytest.raises(UsageError, match="--finetune-epochs applies to"):
        ExperimentConfig(**lth, finetune_epochs=2).resolved()
    with pytest.raises(UsageError, match="--rewind-epoch applies to --prune-method lth only"):
        ExperimentConfig(**{**lth, "method": "imp"}, rewind_epoch=1).resolved()
    with pytest.raises(UsageError, match="--prune-rounds applies to --prune-method imp, lth only"):
        ExperimentConfig(**{**lth, "method": "static"}, prune_rounds=2).resolved()
    with pytest.raises(UsageError, match="--target-epoch does not apply"):
        ExperimentConfig(**lth, target_epoch=1).resolved()


def test_help_and_dry_run_state_the_methods_and_the_cost(tmp_path, capsys):
    text = train.build_parser().format_help()
    for word in ("imp", "lth", "--prune-rounds", "--rewind-epoch"):
        assert word in text, word
    assert not {"imp", "lth"} & set(train.parse([]).methods)
    from training.cost import study_cost
    from training.study import plan_study

    cfgs = plan_study(ExperimentConfig(dataset="digits", epochs=10, num_shadows=1, prune_rounds=3, rewind_epoch=2,
                                       pool_size=100, test_size=100), ["lth"], [0.9])
    lines = study_cost(cfgs, {"lth_0.9": 2}, lambda c: (_ for _ in ()).throw(UsageError("no data")))
    assert any("lth_0.9: 2 model(s) x 24 epochs (3 rounds x 8 epochs)" in x for x in lines), lines


# -- packing -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["grouped", "sequential"])
@pytest.mark.parametrize("method", ["imp", "lth"])
def test_packed_rounds_equal_one_by_one_in_float64(method, mode, tmp_path):
    """3 models packed against the same 3 one by one (float64), each from its own trained weights and (lth) its
    own rewind point, 2 rounds of 2 epochs: masks equal, weights within 1e-9, sparsity exact per model."""
    from data import load_dataset
    from models import build_model
    from training.membership import keep_matrix
    from training.trainer import Trainer, config_steps

    kw = dict(prune_rounds=2, finetune_epochs=2, epochs=4) if method == "imp" else dict(prune_rounds=2, epochs=2)
    cfg = ExperimentConfig(dataset="digits", batch_size=16, pool_size=240, device="cpu", num_shadows=2,
                           method=method, sparsity=0.8, pack_mode=mode, runs_dir=str(tmp_path),
                           **kw).resolved().fit_config()
    ds = load_dataset(cfg)
    keep = keep_matrix(3, len(ds.y_train), cfg.mia_seed)
    steps = config_steps(keep, cfg.batch_size)

    def state(seed):
        torch.manual_seed(seed)
        return build_model("resnet", 20, 1, 10, 1).state_dict()

    init = {i: state(10 + i) for i in range(3)}
    rewind = {i: state(20 + i) for i in range(3)} if method == "lth" else None
    packed = Trainer(cfg, ds, keep, [0, 1, 2], steps, dtype=torch.float64, init=init, rewind=rewind)
    assert packed.mode == mode
    res_p = packed.fit()
    for i in range(3):
        single = Trainer(cfg, ds, keep, [i], steps, dtype=torch.float64, init=init, rewind=rewind)
        a, b = res_p[i]["last"], single.fit()[0]["last"]
        for k in a["state"]:
            torch.testing.assert_close(a["state"][k], b["state"][k], rtol=1e-9, atol=1e-12, msg=k)
        assert all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])
        pr = packed.seats[i].pruner
        assert sum(int((~m).sum()) for m in pr.mask_list) == round(0.8 * pr.numel)
