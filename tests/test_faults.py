"""A numerical or system failure is never a result (docs/long_runs.md, "When a model fails"): the
fault-injection table. Each row runs the real code path with one fault and asserts the one line, the exit
code, and that what was written before is intact: diverged models (dense, DPF, one of a pack), non-finite
signals at training and at reading, an attack that makes NaN, writes the system refuses (ENOSPC, EACCES),
a signals file edited after training; and the disk a study will need."""
import errno
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from artifacts import paths
from configs.config import ExperimentConfig
from mia import mia_advanced
from artifacts.rundir import load_experiment
from mia.attacks import ATTACKS, AttackOutput, AttackSpec
from run_experiment import main as run_experiment_main
from run_experiment import run
from training import signals
from training.experiment import cached_dataset, disk_per_model, experiment_dir
from training.model_io import at_chance
from training.trainer import Trainer, weights_finite
from utils.errors import DivergenceError, UsageError, WriteError
from utils.io import file_digest, load_json, save_json, save_npy, save_text

pytestmark = pytest.mark.usefixtures("one_thread")
# Digits, a 240-image pool, batch 16, 2 epochs, fp32; target + 2 shadows (~80 images each: 4 steps an epoch)
# packed as one network. Too short to learn: its models are at chance (flagged, kept).
TINY = dict(dataset="digits", epochs=2, batch_size=16, pool_size=240, device="cpu", amp=False, mia_queries=1,
            sens_draws=1, checkpoint_every=1, num_shadows=2, pack=3)
FLAGS = ["--dataset", "digits", "--epochs", "2", "--batch-size", "16", "--pool-size", "240", "--device", "cpu",
         "--no-amp", "--mia-queries", "1", "--sens-draws", "1", "--num-shadows", "0"]


def tiny(runs_dir, **kw) -> ExperimentConfig:
    return ExperimentConfig(**{**TINY, **kw, "runs_dir": str(runs_dir)}).resolved()


def digest(f: Path) -> str:
    return hashlib.sha256(Path(f).read_bytes()).hexdigest()


def tree(exp: Path) -> dict[str, str]:
    """Every file below exp (relative path -> sha256): what 'intact' is compared with."""
    return {str(f.relative_to(exp)): digest(f) for f in sorted(exp.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One complete configuration, never modified: tests copy it."""
    cfg = tiny(tmp_path_factory.mktemp("ref") / "runs")
    run(cfg)
    return cfg


@pytest.fixture
def copy(trained, tmp_path):
    """A copy of the trained runs directory, and its config."""
    runs = tmp_path / "runs"
    shutil.copytree(trained.runs_dir, runs)
    return tiny(runs)


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err and all(line.startswith("error: ") for line in err), err
    return err[-1]


# -- divergence in training ------------------------------------------------------------------------------

def test_a_study_whose_models_diverge_goes_on_and_exits_2_listing_them(tmp_path, capsys):
    """lr 1e4 diverges in epoch 1, dense and DPF: each is stopped at its step with the flag to change, gets no
    COMPLETE and no checkpoint; the study trains the second configuration after the first failed."""
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        train.main([*FLAGS, "--methods", "dense", "dpf", "--sparsities", "0.8", "--target-epoch", "1",
                    "--freeze-epoch", "2", "--lr", "1e4", "--runs-dir", str(runs), "--no-eval"])
    assert e.value.code == 2
    line = one_error_line(capsys)
    assert line.startswith("error: 2 training task(s) failed (")
    for name, exp in (("dense", runs / "dense" / "digits"), ("dpf_0.8", runs / "dpf" / "sparsity_0.8" / "digits")):
        assert f"{name} model 0 diverged at epoch 1, step " in line and "--lr 10000" in line
        assert not (exp / paths.COMPLETE).exists() and not (exp / paths.BEST_MODEL).exists()
        assert (exp / paths.KEEP_MATRIX).exists()  # the experiment's own files stay


def test_one_diverged_model_of_a_pack_leaves_the_others_bitwise_unchanged(trained, tmp_path, monkeypatch):
    """Model 1's weights become NaN before step 2 of epoch 2: it is stopped there (its state of epoch 1 kept),
    models 0 and 2 finish and equal, bit for bit, the same pack trained without the fault."""
    calls, real = [], Trainer._forward_backward

    def fault(self, xb, yb, epoch=0):
        calls.append(1)
        if len(calls) == self.iters + 2:  # step 2 of epoch 2
            next(self.seats[1].model.parameters()).data.fill_(float("nan"))  # a slice of the packed network
        return real(self, xb, yb, epoch)

    monkeypatch.setattr(Trainer, "_forward_backward", fault)
    cfg = tiny(tmp_path / "runs")
    with pytest.raises(DivergenceError, match=r"^1 model\(s\) failed: dense model 1 diverged at epoch 2, step 2/4 "
                                              r"\(non-finite training loss\)") as e:
        run(cfg)
    assert [s["model_index"] for s in e.value.finished] == [0, 2]
    exp, ref = experiment_dir(cfg), experiment_dir(trained)
    failed = paths.model_dir(exp, 1)
    assert not (failed / paths.COMPLETE).exists() and not (failed / paths.LOGITS).exists()
    assert torch.load(failed / paths.RESUME, weights_only=True)["epoch"] == 1  # the last state before it failed
    for i in (0, 2):
        assert (paths.model_dir(exp, i) / paths.COMPLETE).exists()
        for f in (paths.BEST_MODEL, paths.LAST_MODEL):
            a = torch.load(paths.model_dir(exp, i) / f, weights_only=True)["state_dict"]
            b = torch.load(paths.model_dir(ref, i) / f, weights_only=True)["state_dict"]
            assert all(torch.equal(a[k], b[k]) for k in a), (i, f)
        for f in (paths.LOGITS, paths.SENSITIVITY):
            np.testing.assert_array_equal(np.load(paths.model_dir(exp, i) / f), np.load(paths.model_dir(ref, i) / f))


def test_weights_finite_known_answers():
    """weights_finite (a float64 sum per tensor): any NaN or infinity in a weight or a BatchNorm statistic is
    seen, +inf and -inf together too; the largest finite float32 values everywhere are finite (no overflow)."""
    net = torch.nn.Sequential(torch.nn.Linear(30, 20), torch.nn.BatchNorm1d(20))
    assert weights_finite(net)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(torch.finfo(torch.float32).max)
        assert weights_finite(net)
        for bad, where in ((float("nan"), net[0].weight), (float("inf"), net[1].running_var), (float("-inf"), net[0].bias)):
            keep = where.clone()
            where[3] = bad
            assert not weights_finite(net)
            where.copy_(keep)
        net[0].weight[0, 0], net[0].weight[1, 1] = float("inf"), float("-inf")
        assert not weights_finite(net)


def test_non_finite_weights_with_a_finite_loss_stop_that_model_of_a_pack(tmp_path, monkeypatch):
    """Model 1's BatchNorm variance becomes inf at the last step of epoch 1 (training uses batch statistics:
    its loss stays finite): the epoch-end check of the packed network sees it and stops model 1 only."""
    calls, real = [], Trainer._forward_backward

    def fault(self, xb, yb, epoch=0):
        out = real(self, xb, yb, epoch)
        calls.append(1)
        if len(calls) == self.iters:
            next(b for b in self.seats[1].model.buffers() if b.is_floating_point()).fill_(float("inf"))
        return out

    monkeypatch.setattr(Trainer, "_forward_backward", fault)
    with pytest.raises(DivergenceError, match=r"^1 model\(s\) failed: dense model 1 diverged at the end of epoch 1 "
                                              r"\(non-finite weights\)") as e:
        run(tiny(tmp_path / "runs"))
    assert [s["model_index"] for s in e.value.finished] == [0, 2]


def test_a_model_at_chance_is_kept_and_flagged(trained):
    """The tiny pack learns nothing in 8 steps (best validation accuracy 0.09-0.15 over 100 images, chance 0.1:
    within 3 standard errors, 0.19): each model is COMPLETE and flagged."""
    assert at_chance([{"val_acc": 0.1}, {"val_acc": None}, {"val_acc": 0.14}], 10, 400)  # 0.1 + 3 x 0.015 = 0.145
    assert not at_chance([{"val_acc": 0.1}, {"val_acc": 0.15}], 10, 400)
    assert not at_chance([{"val_acc": None}], 10, 400)  # never validated: no claim
    exp = experiment_dir(trained)
    for i in range(3):
        s = load_json(paths.model_dir(exp, i) / paths.SUMMARY)
        assert s["at_chance"] == at_chance(s["history"], 10, 100) and (paths.model_dir(exp, i) / paths.COMPLETE).exists()
    assert any(load_json(paths.model_dir(exp, i) / paths.SUMMARY)["at_chance"] for i in range(3))


def test_the_report_names_the_models_at_chance_and_says_nothing_when_none_is(trained):
    """The training table of the real run directory (every model's summary, as the report reads it): the
    flagged models are named in a column and in a warning under the table; the null cases (no model flagged,
    a table written before the flag) add neither."""
    from analysis import report
    from mia.unified_mia_evaluation import training_results

    training = training_results([experiment_dir(trained)])
    flagged = [i for i in range(3) if load_json(paths.model_dir(experiment_dir(trained), i) / paths.SUMMARY)["at_chance"]]
    assert flagged and report.at_chance_models(training) == {trained.name: flagged}
    table = report.trained_table(training)
    assert "| at chance |" in table.splitlines()[0] and table.splitlines()[2].endswith(f"| {', '.join(map(str, flagged))} |")
    text = " ".join(report.at_chance_text(training))
    assert text.startswith(f"**At chance**: the validation accuracy of {trained.name}: model(s) {', '.join(map(str, flagged))} never")
    for learned in (training.assign(at_chance=False), training.drop(columns="at_chance")):
        assert report.at_chance_models(learned) == {} and report.at_chance_text(learned) == []
        assert "at chance" not in report.trained_table(learned)


# -- non-finite signals ----------------------------------------------------------------------------------

def test_the_signal_pass_refuses_non_finite_signals(tmp_path, monkeypatch):
    """The target's logits come out with 3 NaN, shadow 1's sensitivity with 3 inf: neither model's signals are
    written nor its COMPLETE; shadow 2 completes; the run ends with both lines."""
    def corrupt(what, model, bad):
        compute, calls = getattr(signals, f"compute_{what}"), []

        def f(*args, **kw):
            out = compute(*args, **kw)
            calls.append(1)
            if len(calls) == model + 1:  # models are written in order
                out.reshape(-1)[:3] = bad
            return out
        monkeypatch.setattr(signals, f"compute_{what}", f)

    corrupt("logits", 0, np.nan)
    corrupt("sensitivity", 1, np.inf)
    cfg = tiny(tmp_path / "runs")
    with pytest.raises(DivergenceError, match=f"^2 model.s. failed: dense model 0: 3 of .* entries of its {paths.LOGITS} "
                                              f"are not finite .*; dense model 1: 3 of .* entries of its {paths.SENSITIVITY}"):
        run(cfg)
    exp = experiment_dir(cfg)
    for i in (0, 1):
        d = paths.model_dir(exp, i)
        assert not (d / paths.COMPLETE).exists() and not (d / paths.LOGITS).exists() and not (d / paths.SENSITIVITY).exists()
    assert (paths.model_dir(exp, 2) / paths.COMPLETE).exists()


def _rewrite(f: Path, change, record: bool) -> None:
    arr = np.load(f)
    change(arr)
    save_npy(arr, f)
    if record:  # the summary records the new content: as a run of older code that wrote non-finite signals
        signals.record_digests(f.parent, [f.name])


@pytest.mark.parametrize("name, model, bad", [(paths.LOGITS, 0, np.nan), (paths.LOGITS, 2, np.inf),
                                              (paths.SENSITIVITY, 0, np.inf), (paths.SENSITIVITY, 1, np.nan)])
def test_the_reader_refuses_non_finite_signals_naming_file_and_count(copy, tmp_path, capsys, name, model, bad):
    exp = experiment_dir(copy)
    f = paths.model_dir(exp, model) / name
    _rewrite(f, lambda a: a.reshape(-1).__setitem__(slice(0, 10), bad), record=True)
    before = tree(exp)
    with pytest.raises(SystemExit) as e:
        mia_advanced.main(["--runs-dir", copy.runs_dir, "--results-dir", str(tmp_path / "results"), "--attacks", "lira_offline"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{f}: 10 of {np.load(f).size} entries are not finite (NaN or inf)" in err
    assert tree(exp) == before and not (tmp_path / "results").exists()  # nothing scored, nothing changed


def test_a_signals_file_edited_after_training_is_refused_then_recomputed(copy, tmp_path, capsys):
    exp = experiment_dir(copy)
    f = paths.model_dir(exp, 2) / paths.LOGITS
    original = np.load(f)
    _rewrite(f, lambda a: a.reshape(-1).__setitem__(0, a.reshape(-1)[0] + 1), record=False)  # one value, finite
    with pytest.raises(SystemExit) as e:
        mia_advanced.main(["--runs-dir", copy.runs_dir, "--results-dir", str(tmp_path / "results"), "--attacks", "lira_offline"])
    assert e.value.code == 2
    assert (f"{f.parent}: {paths.LOGITS} is not the file its training wrote (its content hash differs from the one "
            f"in {paths.SUMMARY}") in capsys.readouterr().err
    signals.main([copy.runs_dir, "--device", "cpu"])  # the command the line names: recomputed from the checkpoint
    np.testing.assert_allclose(np.load(f), original, rtol=1e-4, atol=1e-5)  # the same model (its own pass: not bitwise)
    assert load_json(f.parent / paths.SUMMARY)["digests"][paths.LOGITS] == file_digest(f)  # its new hash recorded
    load_experiment(exp)  # accepted again


def test_digests_known_answers_and_a_summary_recording_sha256_still_verifies(copy, tmp_path):
    """CRC-32's check value, chunked reads equal to one pass, and the older summaries' sha256 digests: checked
    with the algorithm they record (the same file verifies, an edited one is refused); an unknown one is a line."""
    import os
    import zlib

    from artifacts import rundir

    f = tmp_path / "check"
    f.write_bytes(b"123456789")
    assert file_digest(f) == "crc32:cbf43926"  # CRC-32's published check value
    assert file_digest(f, "sha256") == f"sha256:{hashlib.sha256(b'123456789').hexdigest()}"
    data = os.urandom(3 * 2**20 + 5)  # three 1 MiB chunks and a tail
    (tmp_path / "big").write_bytes(data)
    assert file_digest(tmp_path / "big") == f"crc32:{zlib.crc32(data):08x}"
    d = paths.model_dir(experiment_dir(copy), 1)
    summary = load_json(d / paths.SUMMARY)
    assert summary["digests"][paths.LOGITS].startswith("crc32:")
    save_json({**summary, "digests": {n: file_digest(d / n, "sha256") for n in (paths.LOGITS, paths.SENSITIVITY)}},
              d / paths.SUMMARY)
    assert rundir.stale_signals(d, None) is None
    _rewrite(d / paths.LOGITS, lambda a: a.reshape(-1).__setitem__(0, a.reshape(-1)[0] + 1), record=False)
    assert "is not the file its training wrote" in rundir.stale_signals(d, None)
    save_json({**summary, "digests": {paths.LOGITS: "md4:00"}}, d / paths.SUMMARY)
    with pytest.raises(UsageError, match=r"its recorded digest uses 'md4'; this code knows crc32, sha256"):
        rundir.stale_signals(d, None)


def test_an_attack_that_makes_nan_from_finite_signals_is_refused(copy, tmp_path, monkeypatch, capsys):
    def nan_attack(inp, st):
        z = np.asarray(inp.target_logits, np.float64)[:, 0]
        return AttackOutput(np.log(z.max(1) - z.max(1) - 1.0))  # log of -1: NaN from finite inputs

    monkeypatch.setitem(ATTACKS, "toy_nan", AttackSpec(nan_attack, "toy NaN", "advanced", description="NaN"))
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        mia_advanced.main(["--runs-dir", copy.runs_dir, "--results-dir", str(results), "--attacks", "toy_nan", "lira_offline"])
    assert e.value.code == 2
    n = len(np.load(paths.model_dir(experiment_dir(copy), 0) / paths.KEEP))
    assert f"toy_nan: against model 0: {n} of {n} attack scores are not finite" in capsys.readouterr().err
    csv = next(results.rglob("advanced_mia_results.csv")).read_text()
    assert "lira_offline_auc" in csv and "toy_nan" not in csv  # the other attack is scored, the NaN one is not


# -- writes the system refuses ---------------------------------------------------------------------------

def _refusing(real, target: str, code: int, file_arg: int):
    """A write function (its file the argument `file_arg`) that writes a few bytes of `target`'s temp file and
    then fails with `code`."""
    def write(*args, **kw):
        f = args[file_arg]
        name = getattr(f, "name", str(f))
        if Path(name).name.startswith(f".{target}."):
            Path(name).write_bytes(b"half")
            raise OSError(code, "simulated")
        return real(*args, **kw)
    return write


@pytest.mark.parametrize("target", [paths.BEST_MODEL, paths.LOGITS])  # a checkpoint, a signal
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_refused_checkpoint_or_signal_write_is_one_line_and_keeps_what_was_written(copy, monkeypatch, capsys, target, code):
    """Model 0 retrained into a directory holding its earlier results: the refused file keeps its earlier
    content, no temp file stays, the other models are untouched; ENOSPC also says what a model needs."""
    exp = experiment_dir(copy)
    before = tree(exp)
    if target == paths.BEST_MODEL:
        monkeypatch.setattr(torch, "save", _refusing(torch.save, target, code, 1))  # torch.save(obj, f)
    else:
        monkeypatch.setattr(np, "save", _refusing(np.save, target, code, 0))  # np.save(f, arr)
    with pytest.raises(SystemExit) as e:
        run_experiment_main(["--dataset", "digits", "--epochs", "2", "--batch-size", "16", "--pool-size", "240",
                             "--device", "cpu", "--no-amp", "--mia-queries", "1", "--sens-draws", "1",
                             "--checkpoint-every", "1", "--num-shadows", "2", "--model-index", "0",
                             "--runs-dir", copy.runs_dir])
    assert e.value.code == 2
    line = one_error_line(capsys)
    why = "no space left on the device" if code == errno.ENOSPC else "permission denied"
    assert line.startswith(f"error: cannot write {exp / target}: {why}")
    assert ("a model of dense needs about" in line) == (code == errno.ENOSPC)
    after = tree(exp)
    assert after[target] == before[target]  # the earlier file, whole
    assert not list(exp.rglob("*.tmp"))
    assert {k: v for k, v in after.items() if k.startswith(paths.SHADOWS)} == \
        {k: v for k, v in before.items() if k.startswith(paths.SHADOWS)}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_refused_csv_write_is_one_line_and_keeps_the_earlier_table(copy, tmp_path, monkeypatch, capsys, code):
    results = tmp_path / "results"
    mia_advanced.main(["--runs-dir", copy.runs_dir, "--results-dir", str(results), "--attacks", "lira_offline"])
    csv = next(results.rglob("advanced_mia_results.csv"))
    earlier = csv.read_bytes()
    real = Path.write_text

    def write_text(self, text, *args, **kw):
        if self.name.startswith(f".{csv.name}."):
            real(self, "half")
            raise OSError(code, "simulated")
        return real(self, text, *args, **kw)

    monkeypatch.setattr(Path, "write_text", write_text)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        mia_advanced.main(["--runs-dir", copy.runs_dir, "--results-dir", str(results), "--attacks", "lira_offline"])
    assert e.value.code == 2
    why = "no space left on the device, " if code == errno.ENOSPC else "permission denied"  # ENOSPC: the space free
    line = one_error_line(capsys)
    assert line.startswith(f"error: cannot write {csv}: {why}") and (" free there" in line) == (code == errno.ENOSPC)
    assert csv.read_bytes() == earlier and not list(results.rglob("*.tmp"))


def test_save_text_refused_by_the_system_is_a_write_error(tmp_path, monkeypatch):
    f = tmp_path / "a.txt"
    save_text("earlier", f)
    monkeypatch.setattr(Path, "write_text", lambda self, *a, **k: (_ for _ in ()).throw(OSError(errno.EROFS, "ro")))
    with pytest.raises(WriteError, match=f"cannot write {f}: read-only file system$"):
        save_text("later", f)
    monkeypatch.undo()
    assert f.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# -- the disk a study needs -------------------------------------------------------------------------------

def test_dry_run_states_the_disk_and_the_estimate_bounds_what_a_model_writes(trained, capsys):
    train.main([*FLAGS, "--methods", "dense", "--runs-dir", str(Path(trained.runs_dir).parent / "other"), "--dry-run"])
    line = capsys.readouterr().out.splitlines()[-1]
    per = disk_per_model(trained, cached_dataset(trained))
    assert line.startswith("disk: about ") and "for the 1 models to train" in line and " free in " in line
    written = sum(f.stat().st_size for f in paths.model_dir(experiment_dir(trained), 1).iterdir()
                  if f.name in (paths.BEST_MODEL, paths.LAST_MODEL, paths.LOGITS, paths.SENSITIVITY, paths.REWIND))
    resume_bytes = 3 * written  # bound on a resumable state (weights, momentum, best: 3 checkpoints' worth)
    assert written < per < written + resume_bytes + written  # an upper bound, not a wild one
