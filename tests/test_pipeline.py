"""The whole study end to end at reduced size: train.py -> signals -> every attack -> CSVs, plots, wandb."""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from artifacts import paths

ROOT = paths.Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The quick preset exactly as a new user runs it (dense + static + dpf at 0.9 on digits, 8 shadows,
    targets 0,1,2, every attack, the report), with wandb offline."""
    tmp = tmp_path_factory.mktemp("study")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--preset", "quick", "--runs-dir", "runs",
                        "--results-dir", "results", "--wandb", "--device", "cpu"], cwd=tmp, capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, r.stdout


def _nonmembers(tmp) -> list[int]:
    import numpy as np

    keep = np.load(tmp / "runs" / "dense" / "digits" / paths.KEEP_MATRIX)
    return [int((~keep[t]).sum()) for t in (0, 1, 2)]


def test_comprehensive_csv_columns(study):
    tmp, _ = study
    df = pd.read_csv(tmp / "results" / "comprehensive_mia_results.csv")
    assert list(df.columns[:8]) == ["experiment", "method", "sparsity", "dataset", "arch", "shadows", "train_acc", "test_acc"]
    assert set(df["shadows"]) == {"own"}  # each configuration attacked with its own models (no --shadows-from)
    assert df["experiment"].tolist() == ["dense", "static_0.9", "dpf_0.9"]
    from mia.attacks import ATTACKS

    # ~100 non-members per target: 0.1% FPR lies below the floor; 1% too for a target with fewer than 100
    one_pct_below = any(n < 100 for n in _nonmembers(tmp))
    for attack in ATTACKS:
        for metric in ("auc", "accuracy", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
            assert f"{attack}_{metric}" in df.columns, f"{attack}_{metric}"
        assert df[f"{attack}_tpr_at_0.1pct_fpr_below_floor"].eq(True).all()
        assert df[f"{attack}_tpr_at_1pct_fpr_below_floor"].eq(one_pct_below).all()
    assert df.filter(like="_auc").notna().all().all() and (df["num_targets"] == 3).all()
    # the root copy of the original layout
    assert (tmp / "comprehensive_mia_results.csv").read_text() == (tmp / "results" / "comprehensive_mia_results.csv").read_text()


def test_the_quick_presets_dense_model_leaks(study):
    """The preset is the first thing a user runs: its dense model must show what the tool measures."""
    tmp, _ = study
    df = pd.read_csv(tmp / "results" / "comprehensive_mia_results.csv").set_index("experiment")
    aucs = df.loc["dense", [c for c in df.columns if c.endswith("_auc") and not c.endswith("_std")]]
    assert aucs.max() >= 0.6, aucs.sort_values().to_dict()


def test_the_report_covers_every_configuration_and_attack(study):
    tmp, _ = study
    from mia.attacks import ATTACKS

    res = tmp / "results"
    text = (res / paths.REPORT).read_text()
    for name in ["dense", "static_0.9", "dpf_0.9", *ATTACKS, "static_0.9 - dense", "dpf_0.9 - dense",
                 "dpf_0.9 - static_0.9", "python train.py --preset quick", "python run_experiment.py"]:
        assert name in text, name
    for image in ("privacy_utility_auc.png", "per_class_auc.png", "heatmap_auc.png"):
        assert f"](plots/{image})" in text
    paired = pd.read_csv(res / paths.PAIRED)
    assert len(paired) == 3 * (len(ATTACKS) * 3 + 1)  # pairs x (attacks x metrics + test accuracy)
    assert paired["ci_low"].le(paired["difference"]).all() and paired["difference"].le(paired["ci_high"]).all()
    per_class = pd.read_csv(res / paths.PER_CLASS)
    assert len(per_class) == 3 * len(ATTACKS) and per_class.filter(like="auc_class_").shape[1] == 10


def test_the_quick_preset_states_findings_and_draws_the_sweep(study):
    """The findings and the sparsity figure come from the same code path as the reference study's: every claim at
    0.9 has a verdict with its interval, the trend says it needs two sparsities."""
    tmp, _ = study
    res = tmp / "results"
    text = (res / paths.REPORT).read_text()
    assert text.index("## Findings") < text.index("## What was trained") and "](plots/sparsity_sweep.png)" in text
    assert (res / paths.PLOTS / "sparsity_sweep.png").stat().st_size > 10_000
    found = pd.read_csv(res / paths.FINDINGS)
    decided = found[found["claim"].str.contains("DPF|dense")]
    assert len(decided) == 5 and decided["verdict"].isin(["holds", "reversed", "not resolved"]).all()
    assert decided["ci_low"].le(decided["difference"]).all() and decided["difference"].le(decided["ci_high"]).all()
    trend = found[found["claim"].str.contains("higher sparsity")]
    assert len(trend) == 4 and trend["verdict"].str.startswith("cannot state: one sparsity").all()


def test_long_and_training_tables(study):
    tmp, _ = study
    long = pd.read_csv(tmp / "results" / "comprehensive_mia_results_long.csv")
    assert list(long.columns[-5:]) == ["attack", "target", "metric", "value", "below_floor"]
    short = long["target"].map(dict(zip((0, 1, 2), _nonmembers(tmp)))) < 100  # 1% FPR under 1/#non-members
    expected = (long["metric"] == "tpr_at_0.1pct_fpr") | ((long["metric"] == "tpr_at_1pct_fpr") & short)
    assert long["below_floor"].tolist() == expected.tolist()
    train = pd.read_csv(tmp / "training_results.csv")
    assert len(train) == 3 * 9  # every model of every configuration
    assert {"method", "sparsity", "train_acc", "test_acc", "train_loss", "test_loss", "wall_time_s",
            "measured_sparsity"} <= set(train.columns)
    pruned = train[train.method != "dense"]
    assert (abs(pruned.measured_sparsity - 0.9) < 1e-4).all()


def test_plots_are_png(study):
    tmp, _ = study
    pngs = sorted((tmp / "results" / "plots").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"privacy_utility_auc.png", "privacy_utility_tpr_at_0.1pct_fpr.png", "heatmap_auc.png",
            "roc_dense_digits.png"} <= names
    for p in pngs:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 5000


def test_progress_lines_and_wandb_offline(study):
    tmp, out = study
    assert "[27/27 models]" in out and "remaining" in out
    assert list((tmp / "results" / "wandb").glob("offline-run-*")), "wandb offline run directory missing"


def test_wandb_flag_without_package_is_one_line(tmp_path):
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def imp(n, *a, **k):\n"
            "    if n == 'wandb': raise ImportError(n)\n"
            "    return real(n, *a, **k)\n"
            "builtins.__import__ = imp\n"
            f"sys.argv = ['train.py', '--preset', 'quick', '--wandb', '--runs-dir', {str(tmp_path)!r}]\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "import runpy; runpy.run_path('train.py', run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--wandb needs the wandb package" in r.stderr and "Traceback" not in r.stderr


def test_evaluation_of_empty_runs_dir_is_one_line(tmp_path):
    (tmp_path / "runs").mkdir()
    for script in ("mia/unified_mia_evaluation.py", "mia/mia_advanced.py", "mia/mia_wemem.py"):
        r = subprocess.run([sys.executable, str(ROOT / script), "--runs-dir", str(tmp_path / "runs")],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "no experiment" in r.stderr and "Traceback" not in r.stderr


def test_test_mia_smoke_on_the_study(study, tmp_path):
    """On one of the study's configurations (each costs every attack twice: the script, not the study, is tested)."""
    tmp, _ = study
    shutil.copytree(tmp / "runs" / "dpf", tmp_path / "runs" / "dpf")
    r = subprocess.run([sys.executable, str(ROOT / "test_mia.py"), "--runs-dir", str(tmp_path / "runs")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    from mia.attacks import ATTACKS

    # per experiment: 2 artifact checks, then each attack's raw scores and its AUC on the null copy
    assert f"{1 * (2 + 2 * len(ATTACKS))} passed, 0 failed" in r.stdout
    assert all(f"PASS  null {a} " in r.stdout for a in ATTACKS)
