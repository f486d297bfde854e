"""DP-SGD through Opacus (defenses/dp.py): the clip bound holds per example, a step without noise or clipping is
plain SGD of the GroupNorm model (float64), masks keep their meaning, and epsilon is Opacus's accountant's."""
import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("opacus")

from configs.config import ExperimentConfig
from defenses import DEFENSES, dp
from utils.errors import UsageError


def _cfg(**kw):
    base = dict(dataset="digits", pool_size=64, epochs=1, batch_size=16, device="cpu", defense="dp", lr=0.05, seed=3)
    return ExperimentConfig(**{**base, **kw}).resolved()


def _trainer(cfg, steps=None, dtype=None):
    from data import load_dataset
    from training.trainer import Trainer

    return Trainer(cfg, load_dataset(cfg), np.arange(64) < 40, 0, steps=steps, dtype=dtype)


def _run_epoch(tr):
    from tqdm import tqdm

    with tqdm(disable=True) as bar:
        tr.train_epoch(0, bar)


def test_dp_trains_the_groupnorm_model_one_by_one_in_fp32():
    c = _cfg()
    assert (c.pack, c.amp, c.channels_last, c.dp_noise, c.dp_clip, c.dp_delta) == (1, False, False, 1.0, 1.0, None)
    tr = _trainer(c)
    names = {type(m).__name__ for m in tr.model.modules()}
    assert "GroupNorm" in names and not any("BatchNorm" in n for n in names)


@pytest.mark.parametrize("method", [None, "static", "gmp", "dpf"])
def test_without_noise_or_clipping_a_dp_step_is_a_plain_sgd_step(method, monkeypatch, one_thread):
    """Two steps in float64 with noise 0 and clip 1e12: the weights equal those of the same GroupNorm model,
    seed and batches trained by the plain loop (dp's loop hook removed), to 1e-12. Static masks the
    per-example gradients before clipping, DPF passes them straight through: both as in the plain loop."""
    prune = dict(method=method, sparsity=0.8) if method else {}
    cfg = _cfg(dp_noise=0.0, dp_clip=1e12, weight_decay=5e-4, **prune)
    private = _trainer(cfg, steps=(16, 2), dtype=torch.float64)
    _run_epoch(private)
    monkeypatch.setitem(DEFENSES, "dp", dataclasses.replace(DEFENSES["dp"], loop=None))
    plain = _trainer(cfg, steps=(16, 2), dtype=torch.float64)
    assert type(plain.opt) is torch.optim.SGD
    _run_epoch(plain)
    for (name, a), b in zip(private.model.state_dict().items(), plain.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
    assert not torch.equal(private.model.state_dict()["fc.weight"], _trainer(cfg).model.state_dict()["fc.weight"].double())


def test_each_examples_clipped_gradient_stays_within_the_clip_bound(one_thread):
    """Batch 1 and noise 0: the step's gradient is the one example's clipped gradient, seen by a step hook
    after Opacus clipped it: its norm is at most C, and equals C since the raw gradients are far larger."""
    clip = 1e-3
    tr = _trainer(_cfg(dp_noise=0.0, dp_clip=clip, batch_size=1, method="static", sparsity=0.8),
                  steps=(1, 6))
    norms = []
    tr.hooks.hooks[-1].optimizer.attach_step_hook(lambda opt: norms.append(float(torch.stack([p.grad.norm() for p in opt.params]).norm())))
    _run_epoch(tr)
    assert len(norms) == 6 and max(norms) <= clip * (1 + 1e-6) and min(norms) > 0.99 * clip


@pytest.mark.parametrize("method", ["static", "gmp"])
def test_noise_reaches_live_weights_and_never_revives_a_pruned_one(method, one_thread):
    """After an epoch (gmp has pruned by then), another epoch of heavy noise: every pruned weight stays 0 and
    the mask never grows (static: equal; gmp: only shrinks), while nearly every live weight moves."""
    from tqdm import tqdm

    tr = _trainer(_cfg(dp_noise=5.0, method=method, sparsity=0.8, epochs=2, target_epoch=0), steps=(8, 3))
    _run_epoch(tr)
    mask = {k: v.clone().bool() for k, v in tr.pruner.masks.items()}
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    assert sum(int((~m).sum()) for m in mask.values()) > 0.79 * sum(m.numel() for m in mask.values())
    with tqdm(disable=True) as bar:
        tr.train_epoch(1, bar)
    state = tr.model.state_dict()
    for k, m in mask.items():
        assert not (tr.pruner.masks[k].bool() & ~m).any()  # no pruned weight came back into the mask
        assert (state[k][~m] == 0).all() and (state[k][m] != before[k][m]).float().mean() > 0.99


def test_epsilon_is_opacus_accountants_after_the_same_steps():
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    for _ in range(300):
        acc.step(noise_multiplier=1.1, sample_rate=0.01)
    assert dp.epsilon(1.1, 0.01, 300, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    assert dp.epsilon(1.1, 0.01, 600, 1e-5) > dp.epsilon(1.1, 0.01, 300, 1e-5)  # more steps, more epsilon
    assert dp.epsilon(0.0, 0.01, 1, 1e-5) == float("inf")


def test_a_dp_run_records_epsilon_groupnorm_and_reloads(tmp_path, one_thread):
    import run_experiment
    from mia.epsilon import default_delta
    from training.model_io import load_model

    run_experiment.main(["--dataset", "digits", "--pool-size", "80", "--epochs", "2", "--batch-size", "16",
                         "--defense", "dp", "--dp-noise", "0.8", "--prune", "--prune-method", "static",
                         "--sparsity", "0.9", "--sens-draws", "2", "--runs-dir", str(tmp_path)])
    exp = tmp_path / "static+dp" / "sparsity_0.9" / "digits"
    s = json.loads((exp / "experiment_summary.json").read_text())
    n = s["num_train"]
    assert (s["normalization"], s["dp_delta"], s["dp_steps"]) == ("GroupNorm", default_delta(n), 2 * (n // 16))
    assert s["dp_epsilon"] == pytest.approx(dp.epsilon(0.8, 16 / n, s["dp_steps"], default_delta(n)), rel=1e-12)
    assert s["measured_sparsity"] == pytest.approx(0.9, abs=1e-5)
    model, cfg = load_model(exp / "best_model.pth")
    assert cfg.defense == "dp" and any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


@pytest.mark.parametrize("kw, message", [
    (dict(dp_noise=-0.1), "--dp-noise must be >= 0, got -0.1"),
    (dict(dp_clip=0.0), "--dp-clip must be > 0, got 0.0"),
    (dict(dp_delta=1.0), "--dp-delta must be in (0, 1), got 1.0"),
    (dict(pack=4), "--defense dp trains one model at a time: --pack must be 1, got 4"),
    (dict(defense="ppb", dp_noise=1.0), "--dp-noise applies to --defense dp only, not --defense ppb"),
    (dict(method="finetune", sparsity=0.5), "--defense dp trains a GroupNorm model from scratch; "
     "--prune-method finetune fine-tunes a trained BatchNorm model: use a method that prunes during training (static, gmp, dpf)"),
])
def test_bad_dp_input_is_one_line(kw, message):
    with pytest.raises(UsageError) as e:
        _cfg(**kw)
    assert str(e.value) == message


def test_opacus_missing_is_one_line_and_exit_2(monkeypatch, capsys):
    import importlib.util

    import run_experiment

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "opacus" else real(name, *a))
    with pytest.raises(SystemExit) as e:
        run_experiment.main(["--dataset", "digits", "--defense", "dp"])
    assert e.value.code == 2
    assert capsys.readouterr().err == "error: --defense dp needs Opacus, which is not installed: pip install opacus (1.6 needs torch >= 2.6)\n"
