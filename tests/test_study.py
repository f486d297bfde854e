"""train.py: planning, dry run, bad input, resume after a crash, and the Ray executor."""
import subprocess
import sys

import numpy as np
import pytest

import train
from artifacts import paths
from training import experiment as experiment_mod
from training.experiment import experiment_dir
from training.study import all_methods, plan_study
from utils.errors import UsageError

ROOT = paths.Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--epochs", "1", "--batch-size", "64", "--num-shadows", "2", "--sens-draws", "2",
        "--methods", "dense", "static", "--sparsities", "0.5", "--no-eval", "--device", "cpu"]
SMALL = ["--pool-size", "100", "--test-size", "60"]  # where a test starts processes (Ray workers): less to train


def _cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], capture_output=True, text=True)


def test_dry_run_lists_exactly_the_planned_runs(tmp_path):
    r = _cli("--preset", "quick", "--dry-run", "--runs-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    planned = [l for l in r.stdout.splitlines() if l.strip().startswith("would train")]
    args = train.parse(["--preset", "quick"])
    n_models = args.num_shadows + 1
    pruned = [m for m in args.methods if m != "dense"]  # the default methods: dense, static, dpf
    assert len(planned) == (1 + len(pruned) * len(args.sparsities)) * n_models  # dense once, the others at each
    assert sum("dense model" in l for l in planned) == n_models
    assert sum("dpf_0.9 model" in l for l in planned) == n_models
    assert not tmp_path.joinpath("dense").exists()  # nothing written


def test_plan_trains_dense_once_and_each_method_at_each_sparsity():
    base = train.config_from_args(train.parse(["--dataset", "digits"]))
    names = [c.name for c in plan_study(base, ["dense", "static", "dpf"], [0.5, 0.9])]
    assert names == ["dense", "static_0.5", "static_0.9", "dpf_0.5", "dpf_0.9"]


def test_dry_run_plans_every_method_gmp_included(tmp_path):
    methods = all_methods()
    assert "gmp" in methods and "gmp" not in train.parse([]).methods  # accepted, but an extra
    r = _cli("--dry-run", "--runs-dir", str(tmp_path), "--num-shadows", "1", "--methods", *methods,
             "--sparsities", "0.9")
    assert r.returncode == 0, r.stderr
    assert f"study: {len(methods)} configurations x 2 models = {2 * len(methods)} trainings" in r.stdout
    for m in methods:
        d = "dense/cifar10" if m == "dense" else f"{m}/sparsity_0.9/cifar10"
        assert d in r.stdout, d


def test_one_identity_per_configuration_and_collisions_refused():
    """Name and directory come from one sparsity tag: sparsities that print alike under '%g' (0.9 and
    0.9000001) used to share a name (one result file overwrote the other) while their directories
    differed. Configurations that would share either are refused before anything runs."""
    import dataclasses

    from training.study import check_distinct

    base = train.config_from_args(train.parse(["--dataset", "digits"]))
    a, b = plan_study(base, ["dpf"], [0.9, 0.9000001])
    assert (a.name, b.name) == ("dpf_0.9", "dpf_0.9000001")
    assert experiment_dir(a).name == experiment_dir(b).name == "digits"
    assert experiment_dir(a).parent.name == "sparsity_0.9" and experiment_dir(b).parent.name == "sparsity_0.9000001"
    with pytest.raises(UsageError, match="would share the name dpf_0.9; drop one"):
        check_distinct([a, dataclasses.replace(b, name="dpf_0.9")])


def test_study_schedule_flags_reach_only_the_methods_that_have_them():
    base = train.config_from_args(train.parse(["--dataset", "digits", "--epochs", "10",
                                               "--target-epoch", "4", "--freeze-epoch", "8"]))
    plan = {c.method: c for c in plan_study(base, ["static", "gmp", "dpf"], [0.9])}
    assert (plan["static"].target_epoch, plan["static"].freeze_epoch) == (0, None)
    assert (plan["gmp"].target_epoch, plan["gmp"].freeze_epoch) == (4, None)
    assert (plan["dpf"].target_epoch, plan["dpf"].freeze_epoch) == (4, 8)


def test_refuses_runs_made_when_static_meant_gradual_pruning(tmp_path):
    """A directory written before 2026-11-29, when 'static' was gradual magnitude pruning (its
    config.json has no method_revision), is neither reused nor overwritten, even with --skip-existing."""
    import json

    runs = tmp_path / "runs"
    cfg = plan_study(train.config_from_args(train.parse([*TINY, "--runs-dir", str(runs)])), ["static"], [0.5])[0]
    old = {k: v for k, v in cfg.to_dict().items() if k != "method_revision"}
    cfg_file = experiment_dir(cfg) / paths.CONFIG
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text(json.dumps(old))
    r = _cli(*TINY, "--methods", "static", "--runs-dir", str(runs), "--skip-existing")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "its models were trained when 'static' meant gradual magnitude pruning (now --prune-method gmp)" in r.stderr
    assert "method_revision: 1 there vs 2 asked" in r.stderr
    assert json.loads(cfg_file.read_text()) == old  # nothing rewritten
    assert not (experiment_dir(cfg) / paths.KEEP_MATRIX).exists()


@pytest.mark.parametrize("args, needle", [
    (["--methods", "magic"], f"unknown method 'magic'; valid: {', '.join(all_methods())}"),
    (["--sparsities", "1.5"], "sparsity must be in (0, 1)"),
    (["--dataset", "mnist"], "unknown dataset"),
])
def test_bad_input_one_line_exit_2(args, needle, tmp_path):
    r = _cli("--dry-run", "--runs-dir", str(tmp_path), *args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr


def test_resume_after_a_crash_trains_nothing_twice(tmp_path, monkeypatch):
    runs = str(tmp_path / "runs")
    calls = []
    real = experiment_mod.run_pack

    def crashing(cfg, ds, exp, keep, indices):
        assert len(indices) == 1  # CPU: one model at a time unless --pack says otherwise
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed while training the 5th model
        calls.append((cfg.name, indices[0]))
        return real(cfg, ds, exp, keep, indices)

    monkeypatch.setattr("training.experiment.run_pack", crashing)
    with pytest.raises(SystemExit) as e:
        train.main([*TINY, "--runs-dir", runs])
    assert e.value.code == 130
    done_before = sorted(calls)
    configs = plan_study(train.config_from_args(train.parse([*TINY, "--runs-dir", runs])), ["dense", "static"], [0.5])

    def complete():
        return sorted((c.name, i) for c in configs for i in range(3)
                      if (paths.model_dir(experiment_dir(c), i) / paths.COMPLETE).exists())

    assert complete() == done_before  # what finished before the interrupt is on disk, and only that
    calls.clear()
    monkeypatch.setattr("training.experiment.run_pack", lambda *a: (calls.extend((a[0].name, i) for i in a[4]), real(*a))[1])
    train.main([*TINY, "--runs-dir", runs, "--skip-existing"])
    assert len(calls) == 2 and not set(calls) & set(done_before)
    assert len(complete()) == 6


def test_refuses_a_runs_dir_with_another_recipe(tmp_path):
    runs = str(tmp_path / "runs")
    train.main([*TINY, "--methods", "dense", "--runs-dir", runs])
    r = _cli(*TINY, "--methods", "dense", "--runs-dir", runs, "--lr", "0.05")
    assert r.returncode == 2 and "different recipe (lr: 0.1 there vs 0.05 asked)" in r.stderr


def test_ray_executor_gives_the_same_models_as_local(tmp_path):
    pytest.importorskip("ray")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray gives each 1-CPU task one thread: match it for bitwise equality
    try:
        train.main([*TINY, *SMALL, "--methods", "static", "--runs-dir", str(tmp_path / "local")])
    finally:
        torch.set_num_threads(threads)
    r = _cli(*TINY, *SMALL, "--methods", "static", "--runs-dir", str(tmp_path / "ray"), "--executor", "ray",
             "--cpus-per-model", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    for i in range(3):
        a = np.load(paths.model_dir(tmp_path / "local/static/sparsity_0.5/digits", i) / paths.LOGITS)
        b = np.load(paths.model_dir(tmp_path / "ray/static/sparsity_0.5/digits", i) / paths.LOGITS)
        np.testing.assert_array_equal(a, b)


def test_ray_bad_input(tmp_path):
    pytest.importorskip("ray")
    r = _cli(*TINY, "--runs-dir", str(tmp_path), "--executor", "ray", "--gpus-per-model", "0.5")
    assert r.returncode == 2 and "no GPU" in r.stderr, r.stderr
    r = _cli(*TINY, "--runs-dir", str(tmp_path), "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert r.returncode == 2 and "cannot connect to Ray" in r.stderr, r.stderr


def test_ray_failed_task_is_named_others_finish_and_resume_redoes_only_it(tmp_path):
    pytest.importorskip("ray")
    runs = tmp_path / "runs"
    exp = runs / "static" / "sparsity_0.5" / "digits"
    blocker = paths.model_dir(exp, 2)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where shadow 2's directory must go: that one task fails")
    args = [*TINY, *SMALL, "--methods", "static", "--runs-dir", str(runs)]
    r = _cli(*args, "--executor", "ray", "--cpus-per-model", "1")
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # Ray logs its own warnings
    assert len(errors) == 1 and "1 training task(s) failed (static_0.5 model 2:" in errors[0]
    assert "--skip-existing" in errors[0]
    assert all((paths.model_dir(exp, i) / paths.COMPLETE).exists() for i in (0, 1))  # the others finished
    blocker.unlink()
    r = _cli(*args, "--skip-existing")
    assert r.returncode == 0, r.stderr
    assert "(1 to run, 2 already complete)" in r.stdout
    assert (paths.model_dir(exp, 2) / paths.COMPLETE).exists()


def test_ray_not_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(SystemExit) as e:
        train.main([*TINY, "--runs-dir", str(tmp_path), "--executor", "ray"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == ("error: --executor ray needs Ray: pip install 'ray>=2.9' "
                                               "(or use --executor local)")


def test_progress_counts_a_pack_as_done_before_estimating(monkeypatch, capsys):
    """A pack's 9 models finish at one moment: the estimate is the pack's time per model x what is left
    (700 s / 9 x 18 = 1,400 s), said once after the pack's lines, not extrapolated from its first model."""
    from training import progress as progress_mod

    clock = iter([0.0, 700.0, 1000.0])
    monkeypatch.setattr(progress_mod.time, "time", lambda: next(clock))
    p = progress_mod.Progress(27)
    lines = p.finished([(f"dense model {i}", {"test_acc": 0.5}) for i in range(9)])
    assert len(lines) == 9 and lines[0] == "[1/27 models] dense model 0 done test_acc 0.5000"
    assert lines[-1] == "[9/27 models] dense model 8 done test_acc 0.5000; 18 left, ~23m20s remaining (elapsed 11m40s)"
    assert sum("remaining" in line for line in lines) == 1
    assert p.finished([("static model 0", None)]) == ["[10/27 models] static model 0 done; 17 left, ~28m20s remaining (elapsed 16m40s)"]
