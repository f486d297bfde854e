"""Packed training (training/packing.py, docs/packing.md): K models trained as one network are the
same K models trained one by one, and every artifact is written as without packing."""
import dataclasses
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from configs.config import ExperimentConfig
from data import load_dataset
from models import build_model
from training.membership import keep_matrix
from training.packing import PackedLinear, activation_elements, auto_pack, pack_mode, pack_models, unpack
from utils.errors import UsageError
from training.trainer import Trainer, config_steps

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path, **kw):
    """Digits, a 240-image pool, batch 16: 7 steps per epoch, 4 epochs = 28 steps."""
    kw = {**dict(dataset="digits", arch="resnet", layers=20, epochs=4, batch_size=16, pool_size=240,
                 runs_dir=str(tmp_path / "runs"), device="cpu", num_shadows=2, prune_freq=4), **kw}
    cfg = ExperimentConfig(**kw)
    return cfg.resolved()


PRUNED = {"dense": {}, "static": dict(method="static", sparsity=0.8),
          "dpf": dict(method="dpf", sparsity=0.8, target_epoch=2, freeze_epoch=3),
          "gmp": dict(method="gmp", sparsity=0.8, target_epoch=2),
          # snip: each model's saliency on its own batches; rigl: updates every 4 steps to step 21, each model's
          # gradients and momentum its part of the packed tensors
          "snip": dict(method="snip", sparsity=0.8, snip_batches=2),
          "rigl": dict(method="rigl", sparsity=0.8)}


@pytest.mark.parametrize("mode", ["grouped", "sequential"])
@pytest.mark.parametrize("method", list(PRUNED))
def test_packed_equals_one_by_one_in_float64(method, mode, tmp_path):
    """K = 3 packed (either way a pack computes) against the same 3 models one by one, float64: masks
    equal, weights, BatchNorm statistics and logits within 1e-9 relative, each model's sparsity exact, the
    same history. DPF: refreshes every 4 steps over a ramp to step 14, reactivations, freeze at step 21;
    gmp: the same ramp, the mask only shrinking."""
    cfg = tiny(tmp_path, **PRUNED[method], pack_mode=mode)
    ds = load_dataset(cfg)
    keep = keep_matrix(3, len(ds.y_train), cfg.mia_seed)
    steps = config_steps(keep, cfg.batch_size)
    packed = Trainer(cfg, ds, keep, [0, 1, 2], steps, dtype=torch.float64)
    assert packed.mode == mode and len(packed.nets) == (1 if mode == "grouped" else 3)
    res_p = packed.fit()
    singles = [Trainer(cfg, ds, keep, [i], steps, dtype=torch.float64) for i in range(3)]
    res_s = [t.fit()[0] for t in singles]
    x = torch.from_numpy(ds.x_train[:64]).double().div(255)  # any input: the models compute the same function
    reactivations = 0
    for i, single in enumerate(singles):
        a, b = res_p[i]["last"], res_s[i]
        b = b["last"]
        assert a["state"].keys() == b["state"].keys()
        for k in a["state"]:
            torch.testing.assert_close(a["state"][k], b["state"][k], rtol=1e-9, atol=1e-12, msg=k)
        assert a["masks"].keys() == b["masks"].keys()
        assert all(torch.equal(a["masks"][k], b["masks"][k]) for k in a["masks"])
        if method != "dense":
            pr = packed.seats[i].pruner
            assert sum(int((~m).sum()) for m in pr.mask_list) == round(0.8 * pr.numel)  # exact, per model
            assert sum(int((w == 0).sum()) for k, w in a["state"].items() if k in a["masks"]) == round(0.8 * pr.numel)
        hp, hs = res_p[i]["history"], res_s[i]["history"]
        for rp, rs in zip(hp, hs):
            for k in rp:  # val_* are None on the epochs not validated (--val-from), in both
                assert rp[k] == rs[k] if rp[k] is None else rp[k] == pytest.approx(rs[k], rel=1e-9, abs=1e-12), k
        reactivations += sum(r.get("reactivations", 0) for r in hp)
        mp, ms = packed.seats[i].model.eval(), single.model.eval()
        torch.testing.assert_close(mp(x), ms(x), rtol=1e-9, atol=1e-12)
    if method in ("dpf", "rigl"):  # weights came back (rigl: grown), so the comparison covered the updates
        assert reactivations > 0 and packed.seats[0].pruner.total_refreshes > 3
    if method == "dpf":
        assert res_p[0]["history"][-1]["mask_frozen"]


def test_models_differ_inside_a_pack(tmp_path):
    """Own seed, own data, own stream: the models of a pack are not copies of each other."""
    cfg = tiny(tmp_path, epochs=1)
    ds = load_dataset(cfg)
    keep = keep_matrix(3, len(ds.y_train), cfg.mia_seed)
    res = Trainer(cfg, ds, keep, [0, 1, 2]).fit()
    w = [r["last"]["state"]["conv1.weight"] for r in res]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])


@pytest.mark.parametrize("arch, layers", [("resnet", 20), ("wideresnet", 10)])
def test_pack_is_a_view_of_the_single_models_and_unpacks(arch, layers):
    torch.manual_seed(0)
    models = [build_model(arch, layers, 1, 10, 1).double() for _ in range(2)]
    for m in models:  # non-trivial BatchNorm statistics
        m.train()(torch.randn(8, 1, 8, 8, dtype=torch.float64))
    x = [torch.randn(4, 1, 8, 8, dtype=torch.float64) for _ in models]
    expected = [m.eval()(xi) for m, xi in zip(models, x)]
    net = pack_models(models).eval()
    assert any(isinstance(m, PackedLinear) for m in net.modules())
    out = net(torch.cat(x, 1))
    assert out.shape == (4, 2, 10)
    for k in range(2):
        torch.testing.assert_close(out[:, k], expected[k], rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        net.conv1.weight.mul_(2)  # a write to the pack is a write to every model
    assert torch.equal(models[1].conv1.weight, net.conv1.weight[16:])
    torch.testing.assert_close(net(torch.cat(x, 1))[:, 1], models[1](x[1]), rtol=1e-12, atol=1e-12)
    keys = [list(m.state_dict()) for m in models]
    unpack(models)
    assert [list(m.state_dict()) for m in models] == keys
    with torch.no_grad():
        net.conv1.weight.zero_()
    assert models[0].conv1.weight.abs().sum() > 0  # own storage after unpack


def test_auto_pack(tmp_path):
    cfg = tiny(tmp_path)
    assert auto_pack(cfg, torch.device("cpu")) == 1
    assert auto_pack(dataclasses.replace(cfg, pack=5), torch.device("cpu")) == 5
    cuda = torch.device("cuda")
    assert auto_pack(cfg, cuda, free_bytes=100 * 2**30) == 17  # an idle large GPU: the cap, a whole configuration
    assert auto_pack(cfg, cuda, free_bytes=1) == 1
    small = auto_pack(cfg, cuda, free_bytes=2 * 2**30)
    wide = dataclasses.replace(cfg, arch="wideresnet", layers=28, width_factor=2)
    assert 1 <= auto_pack(wide, cuda, free_bytes=2 * 2**30) < small
    assert activation_elements(build_model("resnet", 20, 1, 10, 3), (3, 32, 32)) > 16 * 32 * 32 * 19


def test_pack_mode(tmp_path):
    """auto: grouped on CUDA and for tiny images (overhead-bound CPU steps), sequential for CIFAR-sized
    images on a CPU; an explicit mode wins; an unknown one is one line."""
    cfg, cpu, cuda = tiny(tmp_path), torch.device("cpu"), torch.device("cuda")
    assert pack_mode(cfg, cpu, (100, 1, 8, 8)) == "grouped"
    assert pack_mode(cfg, cpu, (100, 3, 32, 32)) == "sequential"
    assert pack_mode(cfg, cuda, (100, 3, 32, 32)) == "grouped"
    assert pack_mode(dataclasses.replace(cfg, pack_mode="grouped"), cpu, (100, 3, 32, 32)) == "grouped"
    assert pack_mode(dataclasses.replace(cfg, pack_mode="sequential"), cuda, (100, 1, 8, 8)) == "sequential"
    with pytest.raises(UsageError, match="--pack-mode 'fast'; valid: auto, grouped, sequential"):
        tiny(tmp_path, pack_mode="fast")


def test_packs_are_as_few_and_as_even_as_k_allows(tmp_path):
    from training.experiment import Pack, Task, plan_packs

    cfg = tiny(tmp_path, pack=16)
    assert [p.indices for p in plan_packs([Task(cfg, i) for i in range(17)])] == [tuple(range(9)), tuple(range(9, 17))]
    cfg4 = dataclasses.replace(cfg, pack=4)
    other = dataclasses.replace(cfg, pack=1, name="other")
    packs = plan_packs([Task(cfg4, i) for i in (0, 2, 3, 5, 6, 7)] + [Task(other, 1), Task(other, 4)])
    assert [(p.cfg.name, p.indices) for p in packs] == [(cfg.name, (0, 2, 3)), (cfg.name, (5, 6, 7)),
                                                        ("other", (1,)), ("other", (4,))]
    assert packs[0].label.endswith("models 0, 2, 3 (packed)") and packs[2].label == "other model 1"
    assert isinstance(packs[0], Pack)


def test_config_steps_from_the_smallest_set():
    keep = np.zeros((3, 100), bool)
    keep[0, :50], keep[1, :47], keep[2, :52] = True, True, True
    assert config_steps(keep, 16) == (16, 2)    # 47 // 16
    assert config_steps(keep, 128) == (47, 1)   # a batch larger than the smallest set
    assert config_steps(keep[2], 16) == (16, 3)


@pytest.mark.parametrize("mode", ["grouped", "sequential"])
def test_packed_run_writes_every_artifact_and_resumes_per_pack(mode, tmp_path, monkeypatch):
    """run_experiment.py --pack 3 (either mode): each model's directory is what a one-by-one run writes (the reader of
    mia/ accepts it), every model ran the configuration's steps; a lost model is redone alone."""
    import run_experiment
    from artifacts import paths
    from artifacts.rundir import read_model_record
    from training import experiment
    from training.model_io import load_model

    cfg = tiny(tmp_path, epochs=1, pack=3, pack_mode=mode, sens_draws=2, method="static", sparsity=0.5)
    summaries = run_experiment.run(cfg)
    exp = experiment.experiment_dir(cfg)
    keep = np.load(exp / paths.KEEP_MATRIX)
    batch, iters = config_steps(keep, cfg.batch_size)
    assert keep.sum(1).min() < keep.sum(1).max()  # the subsets differ in size, the steps do not
    for i, s in enumerate(summaries):
        d = paths.model_dir(exp, i)
        for f in (paths.BEST_MODEL, paths.LAST_MODEL, paths.SUMMARY, paths.KEEP, paths.LOGITS,
                  paths.SENSITIVITY, paths.COMPLETE):
            assert (d / f).exists(), (i, f)
        assert (s["model_index"], s["pack_size"], s["pack_mode"], s["iters_per_epoch"], s["batch_used"]) == \
            (i, 3, mode, iters, batch)
        assert s["measured_sparsity"] == pytest.approx(0.5, abs=1e-5)
        model, mcfg = load_model(d / paths.BEST_MODEL)
        assert mcfg.model_index == i and not any(isinstance(m, PackedLinear) for m in model.modules())
        np.testing.assert_array_equal(np.load(d / paths.KEEP), keep[i])
        assert read_model_record(exp, d)["measured_sparsity"] == s["measured_sparsity"]
    (paths.model_dir(exp, 1) / paths.COMPLETE).unlink()  # model 1 lost (killed mid-pack)
    calls = []
    real = experiment.run_pack
    monkeypatch.setattr(run_experiment, "run_pack", lambda *a: (calls.append(a[4]), real(*a))[1])
    run_experiment.run(dataclasses.replace(cfg, skip_existing=True))
    assert calls == [[1]] and (paths.model_dir(exp, 1) / paths.COMPLETE).exists()


def test_one_by_one_models_run_the_configurations_steps(tmp_path):
    """--pack 1 and --model-index: the steps come from the configuration's smallest set, not the model's own."""
    import run_experiment
    from artifacts import paths
    from training import experiment

    cfg = tiny(tmp_path, epochs=1, pack=1, sens_draws=2, model_index=2)
    [s] = run_experiment.run(cfg)
    keep = np.load(experiment.experiment_dir(cfg) / paths.KEEP_MATRIX)
    assert keep[2].sum() // 16 != keep.sum(1).min() // 16  # this model alone would run more steps
    assert (s["iters_per_epoch"], s["pack_size"]) == (config_steps(keep, 16)[1], 1)


def test_each_model_of_a_pack_draws_its_own_stream_as_alone(tmp_path):
    """pack_batches: model k's images (channels k*C..) and labels are what DeviceData.batches() gives
    that model alone from the same seed (its shuffle, crops, flips), cut to the configuration's steps."""
    from training.trainer import pack_batches

    cfg = tiny(tmp_path, dataset="digits")
    ds = load_dataset(cfg)
    keep = keep_matrix(3, len(ds.y_train), cfg.mia_seed)
    tr = Trainer(cfg, ds, keep, [0, 1, 2])
    alone = Trainer(cfg, ds, keep, [1])
    c = ds.in_channels
    packed = list(pack_batches(tr.seats, tr.batch, tr.iters))
    stream = list(alone.seats[0].train.batches(tr.batch, alone.seats[0].gen))
    assert len(packed) == tr.iters <= len(stream)  # the configuration's steps (model 1 alone may have more)
    for (x, y), (xs, ys) in zip(packed, stream):
        assert x.shape == (tr.batch, 3 * c, 8, 8) and y.shape == (tr.batch, 3)
        assert torch.equal(x[:, c:2 * c], xs) and torch.equal(y[:, 1], ys)
        assert not torch.equal(x[:, :c], xs)


_MAPPED_WHILE_ALIVE = """
import ctypes, sys, torch
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6"); libc.mallinfo2.restype = Info
if sys.argv[1] == "keep":
    from utils.device import keep_freed_cpu_memory
    assert keep_freed_cpu_memory()
x = torch.ones(64 << 20, dtype=torch.uint8); del x        # a step's large tensor, freed
x = torch.ones(64 << 20, dtype=torch.uint8)              # and the next step's
print(libc.mallinfo2().hblkhd >> 20)                      # MiB in mapped blocks while it is alive
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_freed_cpu_blocks_stay_in_the_heap():
    """utils.device.keep_freed_cpu_memory (called for CPU training): a 64 MiB tensor freed and allocated
    again comes from the heap, not from freshly mapped pages (glibc's default maps every block above
    32 MiB anew and unmaps it when freed: page faults for a pack's large tensors every step)."""
    def mapped(mode):
        out = subprocess.run([sys.executable, "-c", _MAPPED_WHILE_ALIVE, mode], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[1])
        return int(out.stdout.split()[-1])

    assert mapped("default") >= 64   # control: without it the tensor is a mapped block
    assert mapped("keep") < 64


def test_kill_9_mid_study_loses_only_the_pack_in_flight(tmp_path):
    """A real SIGKILL: run_experiment.py --pack 2 on 4 models (2 packs) is killed as soon as the first
    pack's models are complete, while the second trains. The first pack's files are untouched by the
    rerun with --skip-existing, which trains only the models that were not complete, and every model
    ends complete and readable."""
    import os
    import signal
    import time

    from artifacts import paths
    from artifacts.rundir import read_model_record
    from training import experiment

    root = Path(__file__).resolve().parents[1]
    cfg = tiny(tmp_path, epochs=6, num_shadows=3, pack=2, sens_draws=2)
    args = [sys.executable, "run_experiment.py", "--dataset", "digits", "--device", "cpu", "--epochs", "6",
            "--batch-size", "16", "--pool-size", "240", "--num-shadows", "3", "--pack", "2", "--prune-freq", "4",
            "--sens-draws", "2", "--runs-dir", cfg.runs_dir]
    exp = experiment.experiment_dir(cfg)
    done = [paths.model_dir(exp, i) / paths.COMPLETE for i in range(4)]
    proc = subprocess.Popen(args, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (done[0].exists() and done[1].exists()) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    complete_at_kill = [d.exists() for d in done]
    assert complete_at_kill[:2] == [True, True] and not all(complete_at_kill)  # killed with pack 2 in flight
    first = {i: (paths.model_dir(exp, i) / paths.BEST_MODEL).stat().st_mtime_ns for i in range(4) if complete_at_kill[i]}
    log = subprocess.run(args + ["--skip-existing"], cwd=root, capture_output=True, text=True, timeout=600)
    assert log.returncode == 0, log.stderr[-2000:]
    lost = complete_at_kill.count(False)
    assert f"{lost} model(s) trained, {4 - lost} skipped" in log.stdout + log.stderr
    assert all(d.exists() for d in done)
    assert {i: (paths.model_dir(exp, i) / paths.BEST_MODEL).stat().st_mtime_ns for i in first} == first
    for i in range(4):
        assert read_model_record(exp, paths.model_dir(exp, i))["model_index"] == i


def test_grouped_conv_benchmark_runs(capsys):
    """benchmarks/grouped_conv.py (the figure behind pack_mode's CPU rule) cannot rot: tiny sizes, every
    stage and layout printed with its ratio."""
    from benchmarks import grouped_conv

    grouped_conv.main(["--batch-size", "2", "--k", "2", "--iters", "1"])
    rows = [line for line in capsys.readouterr().out.splitlines() if "grouped / plain speed" in line]
    assert len(rows) == 6 and all(line.rstrip().endswith("x") for line in rows)
