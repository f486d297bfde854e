"""The whole study end to end at reduced size: train.py -> signals -> every attack -> CSVs, plots, wandb."""
import os
import subprocess
import sys

import pandas as pd
import pytest

from configs import paths

ROOT = paths.Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """dense + static + dpf at 0.9, 5 shadows each, 4 epochs on digits, all attacks, wandb offline."""
    tmp = tmp_path_factory.mktemp("study")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--preset", "quick", "--sparsities", "0.9",
                        "--epochs", "4", "--runs-dir", "runs", "--results-dir", "results", "--wandb",
                        "--device", "cpu"], cwd=tmp, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp, r.stdout


def test_comprehensive_csv_columns(study):
    tmp, _ = study
    df = pd.read_csv(tmp / "results" / "comprehensive_mia_results.csv")
    assert list(df.columns[:7]) == ["experiment", "method", "sparsity", "dataset", "arch", "train_acc", "test_acc"]
    assert sorted(df["experiment"]) == ["dense", "dpf_0.9", "static_0.9"]
    from mia.attacks import ATTACKS

    for attack in ATTACKS:
        for metric in ("auc", "accuracy", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr"):
            assert f"{attack}_{metric}" in df.columns, f"{attack}_{metric}"
        # ~650 non-members per target: 1% FPR is measured, 0.1% lies below the floor 1/650
        assert df[f"{attack}_tpr_at_0.1pct_fpr_below_floor"].eq(True).all()
        assert df[f"{attack}_tpr_at_1pct_fpr_below_floor"].eq(False).all()
    assert df.filter(like="_auc").notna().all().all()
    # the root copy of the original layout
    assert (tmp / "comprehensive_mia_results.csv").read_text() == (tmp / "results" / "comprehensive_mia_results.csv").read_text()


def test_long_and_training_tables(study):
    tmp, _ = study
    long = pd.read_csv(tmp / "results" / "comprehensive_mia_results_long.csv")
    assert list(long.columns[-5:]) == ["attack", "target", "metric", "value", "below_floor"]
    assert long["below_floor"].tolist() == (long["metric"] == "tpr_at_0.1pct_fpr").tolist()
    train = pd.read_csv(tmp / "training_results.csv")
    assert len(train) == 3 * 6  # every model of every configuration
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
    assert "[18/18 models]" in out and "remaining" in out
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


def test_test_mia_smoke_on_the_study(study):
    tmp, _ = study
    r = subprocess.run([sys.executable, str(ROOT / "test_mia.py"), "--runs-dir", str(tmp / "runs")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    from mia.attacks import ATTACKS

    # per experiment: 2 artifact checks, then each attack's raw scores and its AUC on the null copy
    assert f"{3 * (2 + 2 * len(ATTACKS))} passed, 0 failed" in r.stdout
    assert all(f"PASS  null {a} " in r.stdout for a in ATTACKS)
