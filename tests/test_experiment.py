"""run_experiment end to end on digits: layout, self-description, membership actually used,
signals, resume and bad input."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from artifacts import paths
from configs.config import ExperimentConfig
from run_experiment import run
from training.experiment import experiment_dir
from utils.errors import UsageError

ROOT = paths.Path(__file__).resolve().parents[1]


def test_dense_run_writes_a_self_describing_directory(tiny_cfg):
    cfg = tiny_cfg.resolved()
    [summary] = run(cfg)
    exp = experiment_dir(cfg)
    assert exp.as_posix().endswith("runs/dense/digits")
    for f in (paths.CONFIG, paths.BEST_MODEL, paths.LAST_MODEL, paths.SUMMARY, paths.KEEP, paths.LOGITS,
              paths.SENSITIVITY, paths.COMPLETE, paths.KEEP_MATRIX, paths.LABELS):
        assert (exp / f).exists(), f
    s = json.loads((exp / paths.SUMMARY).read_text())
    for k in ("model_index", "num_params", "train_acc", "test_acc", "train_loss", "test_loss", "best_epoch",
              "wall_time_s", "images_per_s", "device", "torch_version", "measured_sparsity", "history"):
        assert k in s, k
    # measurements only: the recipe is config.json's, and one reader joins them (artifacts/rundir.py: model_record)
    assert not {"name", "method", "sparsity", "dataset", "arch", "layers", "epochs"} & set(s)
    assert len(s["history"]) == 2 and s["measured_sparsity"] == 0.0
    # how it was computed: bf16 autocast on a CPU with native bf16 (training/precision.cpu_bf16), else fp32
    from training.precision import cpu_bf16

    assert (s["device_type"], s["precision"], s["pack_size"]) == ("cpu", "bf16" if cpu_bf16() else "fp32", 1)
    from artifacts.rundir import read_model_record

    record = read_model_record(exp, exp)
    assert (record["experiment"], record["method"], record["sparsity"], record["arch"]) == ("dense", "dense", 0.0, "resnet-20")
    assert record["test_acc"] == s["test_acc"] and record["measured_sparsity"] == 0.0
    assert ExperimentConfig.from_dict(json.loads((exp / paths.CONFIG).read_text())).recipe() == cfg.recipe()
    logits = np.load(exp / paths.LOGITS)
    assert logits.shape == (1297, 2, 10) and logits.dtype == np.float32 and np.isfinite(logits).all()
    assert np.load(exp / paths.SENSITIVITY).shape == (1297, 10)
    np.testing.assert_array_equal(np.load(exp / paths.KEEP), np.load(exp / paths.KEEP_MATRIX)[0])


def test_checkpoint_rebuilds_the_model_alone(tiny_cfg):
    from training.model_io import load_model
    from utils.io import load_torch

    cfg = tiny_cfg.resolved()
    run(cfg)
    exp = experiment_dir(cfg)
    model, c2 = load_model(exp / paths.BEST_MODEL)
    assert c2.recipe() == cfg.recipe()
    from data import DeviceData, load_dataset
    from training.signals import compute_logits

    ds = load_dataset(cfg)
    pool = DeviceData.build(ds.x_train, ds.y_train, ds, "cpu")
    np.testing.assert_allclose(compute_logits(model, pool, 2, 10), np.load(exp / paths.LOGITS), rtol=1e-5, atol=1e-5)
    ck = load_torch(exp / paths.LAST_MODEL)
    assert ck["config"]["epochs"] == 2


def test_same_seed_same_model_on_cpu(tiny_cfg, tmp_path):
    import dataclasses

    a = tiny_cfg.resolved()
    b = dataclasses.replace(a, runs_dir=str(tmp_path / "other"))
    run(a), run(b)
    la = np.load(experiment_dir(a) / paths.LOGITS)
    lb = np.load(experiment_dir(b) / paths.LOGITS)
    np.testing.assert_array_equal(la, lb)


def test_each_model_trains_on_exactly_its_keep_row(tiny_cfg, monkeypatch):
    """Instrument the data path: record the images the training data is built from."""
    from data import loader

    seen = []
    orig = loader.DeviceData.build.__func__

    def spy(cls, x, y, ds, device):
        seen.append((x.copy(), y.copy()))
        return orig(cls, x, y, ds, device)

    monkeypatch.setattr(loader.DeviceData, "build", classmethod(spy))
    tiny_cfg.num_shadows, tiny_cfg.epochs = 2, 1
    cfg = tiny_cfg.resolved()
    from data import load_dataset

    ds = load_dataset(cfg)
    run(cfg)
    keep = np.load(experiment_dir(cfg) / paths.KEEP_MATRIX)
    # Each model builds its training set first, then val, test and the whole pool (signals).
    builds_per_model = len(seen) // 3
    assert builds_per_model == 4
    for i in range(3):
        x = seen[i * builds_per_model][0]
        np.testing.assert_array_equal(x, ds.x_train[keep[i]])
        # keep.npy records the membership the run used: the images it trained on, not just the matrix row
        np.testing.assert_array_equal(ds.x_train[np.load(paths.model_dir(experiment_dir(cfg), i) / paths.KEEP)], x)


def test_skip_existing_trains_only_missing_models(tiny_cfg):
    import dataclasses

    tiny_cfg.num_shadows, tiny_cfg.epochs = 2, 1
    cfg = tiny_cfg.resolved()
    run(cfg)
    exp = experiment_dir(cfg)
    (paths.model_dir(exp, 2) / paths.COMPLETE).unlink()  # as if interrupted while training model 2
    before = {i: (paths.model_dir(exp, i) / paths.BEST_MODEL).stat().st_mtime_ns for i in range(3)}
    trained = run(dataclasses.replace(cfg, skip_existing=True))
    assert [s["model_index"] for s in trained] == [2]
    after = {i: (paths.model_dir(exp, i) / paths.BEST_MODEL).stat().st_mtime_ns for i in range(3)}
    assert after[0] == before[0] and after[1] == before[1] and after[2] != before[2]
    assert (paths.model_dir(exp, 2) / paths.COMPLETE).exists()


def test_refuses_to_mix_recipes(tiny_cfg):
    import dataclasses

    cfg = tiny_cfg.resolved()
    run(cfg)
    with pytest.raises(UsageError, match="epochs: 2 there vs 3 asked"):
        run(dataclasses.replace(cfg, epochs=3, milestones=[1, 2]))


def _pruned_run(tiny_cfg, method, **kw):
    import dataclasses

    from utils.io import load_torch

    cfg = dataclasses.replace(tiny_cfg, method=method, sparsity=0.8, epochs=4, **kw).resolved()
    [summary] = run(cfg)
    exp = experiment_dir(cfg)
    return summary, load_torch(exp / paths.BEST_MODEL), load_torch(exp / paths.LAST_MODEL)


def _pruned_count(sparsity, summary):
    return round(sparsity * summary["num_prunable"])


def test_static_is_at_its_target_sparsity_in_every_epoch_and_keeps_one_mask(tiny_cfg):
    """The study's static: pruned once before the first step, so every epoch of the history (the first
    included) measures exactly the target count, and the best and last checkpoints hold one mask."""
    summary, best, last = _pruned_run(tiny_cfg, "static")
    target = _pruned_count(0.8, summary)
    assert [_pruned_count(h["measured_sparsity"], summary) for h in summary["history"]] == [target] * 4
    assert [h["scheduled_sparsity"] for h in summary["history"]] == [0.8] * 4
    assert [h["refreshes"] for h in summary["history"]] == [1, 0, 0, 0]
    assert all(h["mask_frozen"] and h["reactivations"] == 0 for h in summary["history"])
    assert all(torch.equal(best["masks"][k], last["masks"][k]) for k in last["masks"])
    assert _pruned_count(summary["measured_sparsity"], summary) == target


def test_gmp_ramps_from_dense_to_its_target(tiny_cfg):
    """Gradual magnitude pruning: the history climbs the cubic schedule from 0 (the old 'static')."""
    summary, _, _ = _pruned_run(tiny_cfg, "gmp", target_epoch=2, prune_freq=4)  # ~10 iterations an epoch
    measured = [h["measured_sparsity"] for h in summary["history"]]
    assert 0 < measured[0] < measured[1] < 0.8  # ramping (the first refresh, at iteration 0, prunes nothing)
    assert [_pruned_count(m, summary) for m in measured[2:]] == [_pruned_count(0.8, summary)] * 2
    assert summary["history"][0]["scheduled_sparsity"] < summary["history"][1]["scheduled_sparsity"] < 0.8


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "run_experiment.py"), *args], capture_output=True, text=True,
                          cwd=cwd)


@pytest.mark.parametrize("args, needle", [
    (["--arch", "vit"], "unknown arch"),
    (["--dataset", "imagenet"], "unknown dataset"),
    (["--dataset", "digits", "--layers", "7"], "7"),
    (["--dataset", "digits", "--epochs", "0"], "--epochs must be positive"),
    (["--dataset", "npz"], "--data-path"),
    (["--dataset", "digits", "--num-shadows", "2", "--model-index", "5"], "--model-index"),
    (["--dataset", "digits", "--prune", "--prune-method", "static", "--sparsity", "1.5"], "--sparsity"),
    (["--dataset", "digits", "--prune", "--prune-method", "static", "--sparsity", "0.9", "--target-epoch", "3"],
     "--target-epoch does not apply to --prune-method static"),
])
def test_cli_bad_input_one_line_exit_2(args, needle, tmp_path):
    r = _cli(*args, "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


class NotAWeight:
    """An arbitrary class inside a checkpoint: torch.load(weights_only=True) refuses to unpickle it."""


def test_corrupt_checkpoint_is_one_line(tmp_path):
    from training.model_io import load_model

    bad = tmp_path / "best_model.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(UsageError, match="corrupt checkpoint"):
        load_model(bad)
    torch.save({"state_dict": NotAWeight()}, bad)  # a pickle weights_only refuses to load
    with pytest.raises(UsageError) as e:
        load_model(bad)
    msg = str(e.value)  # torch's own text would advise weights_only=False: arbitrary code from the file
    assert "not a valid checkpoint" in msg and "weights_only" not in msg and "\n" not in msg


def test_stale_signals_are_recomputed_by_the_training_side_command(tiny_cfg, capsys):
    """mia/ only reads signals and names `python -m training.signals DIR` when they are missing;
    that command rebuilds exactly what training wrote, and leaves fresh ones alone."""
    from artifacts.rundir import load_experiment
    from training import signals

    cfg = tiny_cfg.resolved()
    run(cfg)
    exp = experiment_dir(cfg)
    before = np.load(exp / paths.LOGITS)
    (exp / paths.LOGITS).unlink()
    with pytest.raises(UsageError, match="logits.npy missing; recompute the signals with: python -m training.signals"):
        load_experiment(exp)
    signals.main([str(cfg.runs_dir)])
    assert f"recomputed the signals of {exp}" in capsys.readouterr().out
    np.testing.assert_allclose(np.load(exp / paths.LOGITS), before, rtol=1e-5, atol=1e-5)  # memory format differs
    signals.main([str(exp)])
    assert "recomputed" not in capsys.readouterr().out
