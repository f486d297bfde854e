"""Resume inside a model (training/resume.py, docs/long_runs.md): a run killed after epoch k and rerun with
--skip-existing continues from its resumable state and ends bitwise equal (CPU, fp32) to a run never
interrupted (weights, masks, best epoch, logits, sensitivity, history); bad states are refused with one line."""
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from artifacts import paths
from configs.config import ExperimentConfig
from run_experiment import run
from training import resume
from training.experiment import experiment_dir
from training.trainer import Trainer
from utils.errors import PREEMPTED_EXIT, Preempted, UsageError

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]
# Digits, a 240-image pool, batch 16: 7 steps an epoch, 4 epochs; fp32 (bitwise is a CPU fp32 promise).
TINY = dict(dataset="digits", epochs=4, batch_size=16, pool_size=240, device="cpu", prune_freq=4, amp=False,
            mia_queries=1, sens_draws=1, checkpoint_every=1)
DPF = dict(method="dpf", sparsity=0.8, target_epoch=2, freeze_epoch=3)  # refreshes every 4 steps to step 14, frozen at step 21


def tiny(runs_dir, **kw) -> ExperimentConfig:
    return ExperimentConfig(**{**TINY, **kw, "runs_dir": str(runs_dir)}).resolved()


class Killed(Exception):
    """Stands for the kill: raised right after the resumable state of the chosen epoch is written."""


def run_killed(cfg, after: int, monkeypatch) -> None:
    real = resume.save

    def save(tr, out_dirs):
        real(tr, out_dirs)
        if tr.epochs_done == after:
            raise Killed

    monkeypatch.setattr(resume, "save", save)
    with pytest.raises(Killed):
        run(cfg)
    monkeypatch.setattr(resume, "save", real)


def run_counting_epochs(cfg, monkeypatch) -> list[int]:
    """run(cfg); returns the epochs it trained (0-based)."""
    trained, real = [], Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", lambda self, epoch, bar: (trained.append(epoch), real(self, epoch, bar))[1])
    run(cfg)
    monkeypatch.setattr(Trainer, "train_epoch", real)
    return trained


def model_dirs(cfg):
    exp = experiment_dir(cfg)
    return [paths.model_dir(exp, i) for i in range(cfg.num_shadows + 1)]


def assert_same_models(ref_cfg, cfg):
    """Every model of the two runs bitwise equal; wall-time fields aside."""
    for a, b in zip(model_dirs(ref_cfg), model_dirs(cfg)):
        for f in (paths.BEST_MODEL, paths.LAST_MODEL):
            x, y = torch.load(a / f, weights_only=True), torch.load(b / f, weights_only=True)
            assert x["epoch"] == y["epoch"] and x["state_dict"].keys() == y["state_dict"].keys()
            for k in x["state_dict"]:
                assert torch.equal(x["state_dict"][k], y["state_dict"][k]), (b, f, k)
            assert x["masks"].keys() == y["masks"].keys() and all(torch.equal(x["masks"][k], y["masks"][k]) for k in x["masks"])
        for f in (paths.LOGITS, paths.SENSITIVITY):
            np.testing.assert_array_equal(np.load(a / f), np.load(b / f), err_msg=str(b / f))
        sx, sy = (json.loads((d / paths.SUMMARY).read_text()) for d in (a, b))
        for s in (sx, sy):
            del s["wall_time_s"], s["images_per_s"]
            for f in (paths.LAST_MODEL, paths.BEST_MODEL):  # a checkpoint's bytes hold the invocation's config
                s.get("digests", {}).pop(f, None)           # (--skip-existing on the rerun); its weights: above
        assert sx == sy
        assert (b / paths.COMPLETE).exists() and not (b / paths.RESUME).exists()  # the state goes with COMPLETE


@pytest.fixture(scope="module")
def dense_ref(one_thread, tmp_path_factory):
    cfg = tiny(tmp_path_factory.mktemp("ref"))
    run(cfg)
    return cfg


CASES = {  # name: (config, epochs after which the run is killed)
    "static": (dict(method="static", sparsity=0.8), [1]),
    "gmp": (dict(method="gmp", sparsity=0.8, target_epoch=2), [1]),  # mid-ramp
    "dpf": (DPF, [1, 3]),  # 1: refreshes, the target and the freeze still ahead; 3: frozen, dense weights dropped
    "pack3-grouped": (dict(DPF, num_shadows=2, pack=3, pack_mode="grouped"), [2]),
    "pack3-sequential": (dict(DPF, num_shadows=2, pack=3, pack_mode="sequential"), [2]),
    "dp-sgd": (dict(defense="dp"), [2]),
    "snip": (dict(method="snip", sparsity=0.8), [1]),  # the mask from the state, not rescored
    "rigl": (dict(method="rigl", sparsity=0.8), [1]),  # updates every 4 steps to step 21 ahead
    "set-pack2": (dict(method="set", sparsity=0.8, num_shadows=1, pack=2), [2]),  # its stream  # the optimizer's noise stream carried over, not restarted (repeated)
}


@pytest.mark.parametrize("case", list(CASES))
def test_killed_and_resumed_equals_uninterrupted(case, tmp_path, monkeypatch):
    kw, kills = CASES[case]
    ref = tiny(tmp_path / "ref", **kw)
    run(ref)
    for k in kills:
        cfg = tiny(tmp_path / f"killed_{k}", **kw)
        run_killed(cfg, k, monkeypatch)
        assert all((d / paths.RESUME).exists() and not (d / paths.COMPLETE).exists() for d in model_dirs(cfg))
        assert run_counting_epochs(dataclasses.replace(cfg, skip_existing=True), monkeypatch) == list(range(k, 4))
        assert_same_models(ref, cfg)


def test_dense_killed_and_resumed_and_a_resume_without_its_random_stream_differs(dense_ref, tmp_path, monkeypatch):
    """The null case: the same resume with another state of the model's generator (data order, crops) ends
    elsewhere, so the bitwise comparison sees a random stream that is not carried over."""
    cfg = tiny(tmp_path / "a")
    run_killed(cfg, 2, monkeypatch)
    assert run_counting_epochs(dataclasses.replace(cfg, skip_existing=True), monkeypatch) == [2, 3]
    assert_same_models(dense_ref, cfg)
    cfg = tiny(tmp_path / "b")
    run_killed(cfg, 2, monkeypatch)
    state_file = experiment_dir(cfg) / paths.RESUME
    st = torch.load(state_file, weights_only=True)
    st["model_rng"] = torch.Generator().manual_seed(1).get_state()  # everything else restored as saved
    torch.save(st, state_file)
    run(dataclasses.replace(cfg, skip_existing=True))
    with pytest.raises(AssertionError):
        assert_same_models(dense_ref, cfg)


def _tamper_recipe(st):
    st["recipe"]["lr"] = 0.05


def _tamper_revision(st):
    st["recipe"]["method_revision"] = 0


def _tamper_format(st):
    st["format"] = 0


def _tamper_model(st):
    st["model_index"] = 3


TAMPER = {"recipe": (_tamper_recipe, "another recipe: lr: 0.05 there vs 0.1 asked"),
          "revision": (_tamper_revision, "another recipe: method_revision: 0 there vs 1 asked"),
          "format": (_tamper_format, f"format 0, this code writes {resume.FORMAT}"),
          "model": (_tamper_model, "it is model 3's")}


def test_bad_states_are_refused_with_one_line(dense_ref, tmp_path, monkeypatch, capsys):
    """Another recipe, another method revision, another format, another model, a truncated file: one line
    each, and the model trains from the start (the truncated case run to the end: equal to a fresh run)."""
    from data import load_dataset
    from training.membership import keep_matrix

    cfg = tiny(tmp_path)
    run_killed(cfg, 1, monkeypatch)
    state_file = experiment_dir(cfg) / paths.RESUME
    good = torch.load(state_file, weights_only=True)
    ds = load_dataset(cfg)
    keep = keep_matrix(1, len(ds.y_train), cfg.mia_seed)
    capsys.readouterr()
    for name, (tamper, why) in TAMPER.items():
        st = copy.deepcopy(good)
        tamper(st)
        torch.save(st, state_file)
        assert resume.restore(Trainer(cfg, ds, keep), [experiment_dir(cfg)]) == 0, name
        lines = [x for x in capsys.readouterr().out.splitlines() if "refused" in x]
        assert lines == [f"note: {state_file} refused ({why}); model 0 trains from the start"], name
    torch.save(good, state_file)
    assert resume.restore(Trainer(cfg, ds, keep), [experiment_dir(cfg)]) == 1  # the control: the untampered state resumes
    state_file.write_bytes(state_file.read_bytes()[: state_file.stat().st_size // 2])
    capsys.readouterr()
    assert run_counting_epochs(dataclasses.replace(cfg, skip_existing=True), monkeypatch) == [0, 1, 2, 3]
    assert "refused (unreadable: truncated or corrupt); model 0 trains from the start" in capsys.readouterr().out
    assert_same_models(dense_ref, cfg)


def test_a_run_without_skip_existing_starts_afresh(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, epochs=2)
    run_killed(cfg, 1, monkeypatch)
    assert run_counting_epochs(cfg, monkeypatch) == [0, 1]


def test_checkpoint_every_is_not_part_of_the_recipe_and_the_default_writes_little():
    a = ExperimentConfig(checkpoint_every=3).resolved()
    assert a.recipe() == ExperimentConfig().resolved().recipe()
    with pytest.raises(UsageError, match=r"--checkpoint-every must be >= 0 \(0: never\), got -1"):
        ExperimentConfig(checkpoint_every=-1).resolved()
    written = []
    ck = resume.Checkpointer(types.SimpleNamespace(epochs_done=0), [], None)  # a trainer: only its position is read
    ck.cost = 0.0
    resume.save, real = (lambda tr, outs: (written.append(tr.epochs_done), time.sleep(0.02))), resume.save
    try:
        for epoch in range(1, 6):  # epochs of ~0 s: after the first write (~0.02 s), the next waits 19 times that
            ck.tr.epochs_done = epoch
            ck(epoch)
        assert written == [1] and ck.cost >= 0.02
        time.sleep(ck.cost * 19 + 0.05)
        ck.tr.epochs_done = 6
        ck(6)
    finally:
        resume.save = real
    assert written == [1, 6]
    every = resume.Checkpointer(None, [], 2)
    assert [e for e in range(1, 7) if every.due(e)] == [2, 4, 6]
    assert not any(resume.Checkpointer(None, [], 0).due(e) for e in range(1, 7))


def test_a_real_kill_9_resumes(dense_ref, tmp_path):
    """run_experiment.py killed with SIGKILL once its first resumable state exists (at whatever epoch the
    signal lands), rerun with --skip-existing: it resumes and ends equal to the uninterrupted run."""
    cfg = tiny(tmp_path)
    args = [sys.executable, "run_experiment.py", "--dataset", "digits", "--device", "cpu", "--epochs", "4",
            "--batch-size", "16", "--pool-size", "240", "--prune-freq", "4", "--no-amp", "--mia-queries", "1",
            "--sens-draws", "1", "--checkpoint-every", "1", "--runs-dir", cfg.runs_dir]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the reference ran on one thread: the same float sums
    state = experiment_dir(cfg) / paths.RESUME
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not state.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (experiment_dir(cfg) / paths.COMPLETE).exists(), \
        "the run ended before it could be killed"
    log = subprocess.run(args + ["--skip-existing"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert log.returncode == 0, log.stderr[-2000:]
    assert "resuming model(s) 0 after epoch" in log.stdout + log.stderr
    assert_same_models(dense_ref, cfg)


# -- SIGTERM: the state at the next step boundary (training/trainer.stop_on_sigterm) --------------------------

def run_sigtermed(cfg, epoch: int, step: int, monkeypatch, again_while_writing: bool = False) -> Preempted:
    """run(cfg) with a real SIGTERM sent to this process during step `step` (1-based) of epoch `epoch`
    (1-based); returns the Preempted it ends with. again_while_writing: a second SIGTERM in the middle of
    writing the state."""
    calls, sent, real_fb = [0], [], Trainer._forward_backward

    def forward_backward(self, xb, yb, ep=0):
        calls[0] += 1
        if calls[0] == (epoch - 1) * self.iters + step:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_fb(self, xb, yb, ep)

    monkeypatch.setattr(Trainer, "_forward_backward", forward_backward)
    if again_while_writing:
        real_save = resume.save_torch

        def save_torch(obj, path):  # the state written after the first SIGTERM (not an epoch's scheduled one)
            if sent:
                os.kill(os.getpid(), signal.SIGTERM)
            real_save(obj, path)

        monkeypatch.setattr(resume, "save_torch", save_torch)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted) as stop:
        run(cfg)
    assert signal.getsignal(signal.SIGTERM) is before  # the loop's handler is gone with the loop
    monkeypatch.undo()
    return stop.value


SIGTERM_CASES = {  # name: (config, [(epoch, step) the SIGTERM lands in]); 7 steps an epoch, 4 epochs
    "dense": ({}, [(2, 3)]),
    # DPF refreshes at iterations 0, 4, 8, 12 and at its target 14: stopped after step 5 of epoch 1 (the
    # refreshes at 0 and 4 in the epoch's log), after step 3 of epoch 2 (iteration 10: the next refresh at 12)
    "dpf": (DPF, [(1, 5), (2, 3)]),
    # 4 steps an epoch: iteration 6, between the refreshes at 4 and 8
    "pack3-grouped": (dict(DPF, num_shadows=2, pack=3, pack_mode="grouped"), [(2, 2)]),
}


@pytest.mark.parametrize("case", list(SIGTERM_CASES))
def test_sigterm_mid_epoch_writes_the_step_and_the_rerun_equals_uninterrupted(case, tmp_path, monkeypatch):
    kw, stops = SIGTERM_CASES[case]
    ref = tiny(tmp_path / "ref", **kw)
    run(ref)
    for epoch, step in stops:
        cfg = tiny(tmp_path / f"stopped_{epoch}_{step}", **kw)
        stop = run_sigtermed(cfg, epoch, step, monkeypatch, again_while_writing=case == "dense")
        for d in model_dirs(cfg):
            st = torch.load(d / paths.RESUME, weights_only=True)
            assert (st["epoch"], st["step"], st["format"]) == (epoch - 1, step, resume.FORMAT)
            assert not (d / paths.COMPLETE).exists() and not list(d.glob(".*.tmp"))
        models, iters = ", ".join(map(str, range(cfg.num_shadows + 1))), st["steps"][1]  # 7 alone, 4 in the pack
        assert str(stop).startswith(f"SIGTERM: {cfg.name} model(s) {models} stopped at epoch {epoch}, "
                                    f"step {step}/{iters} of 4 epochs, resumable state written (")
        assert run_counting_epochs(dataclasses.replace(cfg, skip_existing=True), monkeypatch) == list(range(epoch - 1, 4))
        assert_same_models(ref, cfg)


def test_a_resume_inside_an_epoch_without_its_data_order_differs(dense_ref, tmp_path, monkeypatch):
    """The null case of the test above: the same state with another order for the epoch in progress (every
    other field as saved) ends elsewhere, so the comparison sees an epoch's order that is not carried over."""
    cfg = tiny(tmp_path)
    run_sigtermed(cfg, 2, 3, monkeypatch)
    state_file = experiment_dir(cfg) / paths.RESUME
    st = torch.load(state_file, weights_only=True)
    st["in_epoch"]["order"] = st["in_epoch"]["order"].flip(0)
    torch.save(st, state_file)
    run(dataclasses.replace(cfg, skip_existing=True))
    with pytest.raises(AssertionError):
        assert_same_models(dense_ref, cfg)


def test_a_real_sigterm_exits_75_with_the_command_that_continues(dense_ref, tmp_path):
    """run_experiment.py sent SIGTERM from outside once its first state exists: one line saying where it
    stopped and the command that continues, exit 75; that command ends equal to the uninterrupted run."""
    cfg = tiny(tmp_path)
    args = ["run_experiment.py", "--dataset", "digits", "--device", "cpu", "--epochs", "4", "--batch-size", "16",
            "--pool-size", "240", "--prune-freq", "4", "--no-amp", "--mia-queries", "1", "--sens-draws", "1",
            "--checkpoint-every", "1", "--runs-dir", cfg.runs_dir]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the reference ran on one thread: the same float sums
    state = experiment_dir(cfg) / paths.RESUME
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == PREEMPTED_EXIT, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"preempted: SIGTERM: {cfg.name} model(s) 0 stopped ") and \
        line.endswith(f"; continue with: python {' '.join(args)} --skip-existing"), line
    log = subprocess.run([sys.executable, *args, "--skip-existing"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert log.returncode == 0, log.stderr[-2000:]
    assert "resuming model(s) 0 " in log.stdout + log.stderr
    assert_same_models(dense_ref, cfg)
