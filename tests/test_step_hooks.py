"""The training step's hooks (training/hooks.py, docs/training.md) as an extension point: a toy pruning method that
makes its mask from the first step's gradient, written as one step rule (below) plus one registry line, and
nothing else, runs through run_experiment.py and a train.py study, packed or not; and the hooks' order and veto
as the contract says."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

import run_experiment
import train
from artifacts import paths
from configs.config import ExperimentConfig
from data import load_dataset
from pruning import PRUNING_METHODS, MethodSpec, prune_lowest
from training.hooks import StepHooks
from training.membership import keep_matrix
from training.trainer import Trainer, config_steps, pack_batches
from utils.errors import UsageError
from utils.io import load_json, load_torch

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the whole extension: one step rule and one registry line ----------------------------------------------

class FirstGradientSaliency:
    """SNIP-like, on the training step itself: at the first step's after_backward, keep the weights of largest
    |w * dL/dw| of that step's gradient (its model's own: a pack's slice), pruning to the sparsity once; the
    mask is then fixed."""

    def __init__(self, pruner):
        self.pruner = pruner

    def before_step(self, it: int) -> None:
        pass

    def after_backward(self) -> bool:
        pr = self.pruner
        if not pr.frozen:
            scores = [(w.detach() * g).abs() for w, g in zip(pr.params, pr.slot("grad"))]
            pr.set_masks(prune_lowest(scores, int(round(pr.s_f * pr.numel))))
        return True

    def after_optimizer_step(self) -> None:
        pass


@pytest.fixture
def toy_method(monkeypatch):
    monkeypatch.setitem(PRUNING_METHODS, "grad_once", MethodSpec(
        one_shot=True, regrow=False, straight_through=False, uses_freeze=False, revision=1,
        description="toy: |w * g| of the first training step, once", step=FirstGradientSaliency))


TINY = ["--dataset", "digits", "--pool-size", "64", "--epochs", "2", "--batch-size", "16", "--num-shadows", "2",
        "--sens-draws", "2", "--device", "cpu"]


def test_its_choice_is_in_the_help(toy_method, capsys):
    with pytest.raises(SystemExit) as done:
        run_experiment.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    section = text[text.index("\n  --prune-method"):]
    assert "grad_once" in section[:section.index("\n  --", 1)]


def test_dp_refuses_it(toy_method):
    """A step rule may read the step's raw gradient, outside DP-SGD's clipping and noise."""
    with pytest.raises(UsageError, match="grad_once ranks weights by gradients"):
        ExperimentConfig(dataset="digits", method="grad_once", sparsity=0.5, defense="dp").resolved()


@pytest.mark.parametrize("pack", [["--pack", "1"], ["--pack", "3", "--pack-mode", "grouped"]], ids=["alone", "packed"])
def test_a_run_prunes_at_the_first_step_to_the_exact_sparsity(toy_method, tmp_path, pack):
    """Each model (alone, or three in one packed network: each its own slice of the packed gradient) is pruned
    at its first step to exactly round(s x n) of its n prunable weights, stored as zeros; the mask is fixed from
    then on (one refresh)."""
    run_experiment.main(TINY + ["--prune", "--prune-method", "grad_once", "--sparsity", "0.5", *pack,
                               "--runs-dir", str(tmp_path)])
    exp = paths.experiment_dir(tmp_path, "grad_once", 0.5, "digits")
    masks = []
    for i in range(3):
        out = paths.model_dir(exp, i)
        assert (out / paths.COMPLETE).exists()
        summary, ck = load_json(out / paths.SUMMARY), load_torch(out / paths.BEST_MODEL)
        n = sum(m.numel() for m in ck["masks"].values())
        pruned = sum(int((~m.bool()).sum()) for m in ck["masks"].values())
        assert pruned == round(0.5 * n) and summary["measured_sparsity"] == pytest.approx(pruned / n, abs=1e-12)
        for name, m in ck["masks"].items():
            assert (ck["state_dict"][name][~m.bool()] == 0).all()
        assert [r["total_refreshes"] for r in summary["history"]] == [1, 1]
        assert all(r["mask_frozen"] for r in summary["history"])
        masks.append(torch.cat([m.flatten() for m in ck["masks"].values()]))
    assert not torch.equal(masks[0], masks[1])  # each model its own gradient (its own data and initialisation)


def test_a_study_reports_its_rows(toy_method, tmp_path):
    runs, results = tmp_path / "runs", tmp_path / "results"
    train.main(TINY + ["--methods", "grad_once", "--sparsities", "0.5", "--attacks", "loss",
                       "--runs-dir", str(runs), "--results-dir", str(results), "--summary-dir", str(tmp_path)])
    training = pd.read_csv(results / paths.TRAINING_RESULTS)
    rows = training[training["method"] == "grad_once"]
    assert len(rows) == 3 and rows["measured_sparsity"].between(0.49, 0.51).all()
    df = pd.read_csv(results / f"{paths.COMPREHENSIVE}.csv").set_index("experiment")
    assert list(df.index) == ["grad_once_0.5"] and df.loc["grad_once_0.5", "method"] == "grad_once"
    assert "grad_once" in (results / "report.md").read_text()


def test_the_mask_is_the_first_steps_saliency(toy_method, tmp_path):
    """Trained alone or packed (float64), each model's mask is the top-k |w * g| of its own first step: the
    weights its forward used and the gradient of its first batch, recomputed here from a fresh copy of it."""
    cfg = ExperimentConfig(dataset="digits", pool_size=64, epochs=1, batch_size=16, device="cpu",
                           method="grad_once", sparsity=0.5, pack_mode="grouped",
                           runs_dir=str(tmp_path)).resolved()
    ds = load_dataset(cfg)
    keep = keep_matrix(2, len(ds.y_train), cfg.mia_seed)
    steps = config_steps(keep, cfg.batch_size)
    packed = Trainer(cfg, ds, keep, [0, 1], steps, dtype=torch.float64)
    packed.fit()
    for j in range(2):
        alone = Trainer(cfg, ds, keep, [j], steps, dtype=torch.float64)
        first = Trainer(cfg, ds, keep, [j], steps, dtype=torch.float64)  # its first step, by hand
        first.nets[0].train()
        first._forward_backward(*next(pack_batches(first.seats, first.batch, first.iters)))
        pr = first.seats[0].pruner
        want = prune_lowest([(w.detach() * w.grad).abs() for w in pr.params], int(round(0.5 * pr.numel)))
        alone.fit()
        got_alone, got_packed = alone.seats[0].pruner.mask_list, packed.seats[j].pruner.mask_list
        assert all(torch.equal(a, b) for a, b in zip(got_alone, want))
        assert sum(int((a != b).sum()) for a, b in zip(got_packed, want)) <= 2  # a grouped conv sums in another order


# -- the contract: order, veto ----------------------------------------------------------------------

class Recorder:
    def __init__(self, log, name, veto=False):
        self.log, self.name, self.veto = log, name, veto

    def before_step(self, it):
        self.log.append((self.name, "before_step", it))

    def after_backward(self):
        self.log.append((self.name, "after_backward"))
        return not self.veto

    def after_optimizer_step(self):
        self.log.append((self.name, "after_optimizer_step"))


def test_hooks_run_in_order_and_any_may_veto_the_step():
    log = []
    hooks = StepHooks([Recorder(log, "a", veto=True), None, Recorder(log, "b")])
    hooks.before_step(7)
    assert hooks.after_backward() is False  # a vetoed; b's after_backward still ran
    hooks.after_optimizer_step()
    assert log == [("a", "before_step", 7), ("b", "before_step", 7), ("a", "after_backward"), ("b", "after_backward"),
                   ("a", "after_optimizer_step"), ("b", "after_optimizer_step")]
    assert StepHooks([Recorder([], "c")]).after_backward() is True and not StepHooks([None])
