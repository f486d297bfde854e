"""The suite scripts and the loader on synthetic run directories (the training side's layout)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artifacts import paths
from artifacts.rundir import load_experiment
from mia.attacks import ATTACKS, suite_attacks
from mia.evaluate import METRICS, ROW_KEYS, below_floor, evaluate_experiment, long_rows, wide_row
from tests.mia_synthetic import synthetic_signals, write_experiment
from utils.errors import UsageError
from utils.io import save_npy

ROOT = Path(__file__).resolve().parents[1]


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"mia/{script}", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def small(seed=0, num_shadows=6, **kw):
    return synthetic_signals(n=300, num_shadows=num_shadows, queries=2, classes=4, gap=2.0, seed=seed, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_experiment(root, small(0))
    write_experiment(root, small(1), method="static", sparsity=0.9)
    return root


def _error_lines(p: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in p.stderr
    return [line for line in p.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("script,suite", [("mia_advanced.py", "advanced"), ("mia_wemem.py", "wemem")])
def test_suite_writes_json_and_csv_with_the_documented_columns(runs, tmp_path, script, suite):
    p = run(script, "--runs-dir", runs, "--results-dir", tmp_path, "--device", "cpu")
    assert p.returncode == 0, p.stderr
    out = paths.mia_results_dir(tmp_path, suite)
    df = pd.read_csv(out / f"{suite}_mia_results.csv")
    attacks = suite_attacks(suite)
    metric_cols = [f"{a}_{m}" for a in attacks for m in METRICS if m != "tpr_at_0.01pct_fpr"]  # < 10,000 non-members
    # each TPR level is followed by its flag; ~150 non-members: 1% is measured, 0.1% is below 1/150
    columns = [c for mc in metric_cols for c in ([mc, f"{mc}_below_floor"] if "_tpr_at_" in mc else [mc])]
    assert list(df.columns) == [*ROW_KEYS, *columns, "measured_sparsity", "defense", "dp_epsilon", "num_shadows", "num_targets"]
    assert df[[f"{a}_tpr_at_0.1pct_fpr_below_floor" for a in attacks]].eq(True).all().all()
    assert df[[f"{a}_tpr_at_1pct_fpr_below_floor" for a in attacks]].eq(False).all().all()
    assert sorted(df["experiment"]) == ["dense", "static_0.9"] and df["sparsity"].tolist() == [0.0, 0.9]
    assert df[metric_cols].notna().all().all() and (df[[f"{a}_auc" for a in attacks]] > 0.6).all().all()
    res = json.loads((out / "static_0.9_synthetic.json").read_text())
    for a in attacks:
        r = res["attacks"][a]
        assert set(r) >= {"mean", "std", "per_target", "roc", "settings", "time_s", "calibration"}
        assert r["settings"]["seed"] == 0 and len(r["roc"]["fpr"]) == len(r["roc"]["tpr"]) > 100
    first = res["attacks"][attacks[0]]["settings"]
    assert first == {"seed": 0, "device": "cpu", **({"lira_fixed_variance_below": 64} if suite == "advanced" else {})}
    long = pd.read_csv(out / f"{suite}_mia_results_long.csv")
    assert list(long.columns) == ["experiment", "method", "sparsity", "dataset", "attack", "target", "metric", "value",
                                  "below_floor"]
    assert long["below_floor"].tolist() == (long["metric"] == "tpr_at_0.1pct_fpr").tolist()
    assert "auc" in p.stdout and "written to" in p.stdout


def test_targets_all_gives_mean_and_std_over_targets(runs, tmp_path):
    p = run("mia_wemem.py", "--runs-dir", runs, "--results-dir", tmp_path, "--attacks", "confidence", "loss",
            "--targets", "all")
    assert p.returncode == 0, p.stderr
    out = paths.mia_results_dir(tmp_path, "wemem")
    res = json.loads((out / "dense_synthetic.json").read_text())
    assert res["targets"] == list(range(7))
    conf = res["attacks"]["confidence"]
    assert len(conf["per_target"]) == 7 and conf["std"]["auc"] > 0
    assert conf["mean"]["auc"] == pytest.approx(np.mean([t["auc"] for t in conf["per_target"].values()]))
    df = pd.read_csv(out / "wemem_mia_results.csv")
    assert {"confidence_auc_std", "loss_accuracy_std"} <= set(df.columns)


def test_mia_classic_is_the_wemem_suite(runs, tmp_path):
    p = run("mia_classic.py", "--runs-dir", runs, "--results-dir", tmp_path, "--attacks", "loss", "--targets", "2")
    assert p.returncode == 0, p.stderr
    res = json.loads((paths.mia_results_dir(tmp_path, "wemem") / "dense_synthetic.json").read_text())
    assert res["targets"] == [2] and list(res["attacks"]) == ["loss"]


def test_a_broken_experiment_is_one_line_and_the_others_are_written(tmp_path):
    runs = tmp_path / "runs"
    write_experiment(runs, small(0))
    bad = write_experiment(runs, small(1), method="dpf", sparsity=0.5)
    shadow = paths.model_dir(bad, 3) / paths.LOGITS
    save_npy(np.zeros((300, 3, 4), np.float32), shadow)  # 3 queries where the others have 2
    p = run("mia_advanced.py", "--runs-dir", runs, "--results-dir", tmp_path / "res", "--attacks", "lira", "rmia")
    assert p.returncode == 2
    lines = _error_lines(p)
    assert len(lines) == 2  # the experiment's problem, then the summary
    assert str(bad) in lines[0] and str(shadow) in lines[0] and "(300, 3, 4)" in lines[0] and "(300, 2, 4)" in lines[0]
    out = paths.mia_results_dir(tmp_path / "res", "advanced")
    assert (out / "dense_synthetic.json").exists() and not (out / "dpf_0.5_synthetic.json").exists()
    assert pd.read_csv(out / "advanced_mia_results.csv")["experiment"].tolist() == ["dense"]


def test_too_few_shadows_for_lira_still_writes_the_other_attacks(tmp_path):
    runs = tmp_path / "runs"
    write_experiment(runs, small(0, num_shadows=1))
    p = run("mia_advanced.py", "--runs-dir", runs, "--results-dir", tmp_path / "res", "--attacks", "lira", "loss")
    assert p.returncode == 2
    lines = _error_lines(p)
    assert "lira: LiRA needs at least 2 shadow models (found 1); train with --num-shadows N" in lines[0]
    res = json.loads((paths.mia_results_dir(tmp_path / "res", "advanced") / "dense_synthetic.json").read_text())
    assert list(res["attacks"]) == ["loss"] and "lira" in res["errors"]


@pytest.mark.parametrize("args,message", [
    (["--runs-dir", "/nonexistent/runs"], "runs directory /nonexistent/runs does not exist"),
    (["--runs-dir", "{empty}"], "no experiment in"),
    (["--runs-dir", "{empty}", "--attacks", "lira", "liraa"], f"unknown attack 'liraa'; valid: {', '.join(ATTACKS)}"),
    (["--runs-dir", "{empty}", "--targets", "first"], "--targets must be 'all', a model index or a comma-separated list of them (e.g. 0,1,2), got 'first'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    p = run("mia_wemem.py", *[a.replace("{empty}", str(tmp_path / "empty")) for a in args])
    assert p.returncode == 2
    lines = _error_lines(p)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


# -- the loader and the row builders, in process ------------------------------------------------------

def test_loader_memory_maps_complete_models_only(tmp_path):
    s = small(0)
    exp = write_experiment(tmp_path, s)
    (paths.model_dir(exp, 4) / paths.COMPLETE).unlink()  # model 4 is still training
    sig = load_experiment(exp)
    assert sig.indices == [0, 1, 2, 3, 5, 6] and sig.logits.shape == (6, 300, 2, 4)
    assert isinstance(sig.logits[0], np.memmap)
    np.testing.assert_array_equal(np.asarray(sig.logits), s["logits"][sig.indices])
    np.testing.assert_array_equal(sig.keep, s["keep"][sig.indices])


def test_loader_refuses_inconsistent_files(tmp_path):
    s = small(0)
    exp = write_experiment(tmp_path, s)
    save_npy(~s["keep"][2], paths.model_dir(exp, 2) / paths.KEEP)
    with pytest.raises(UsageError, match="keep.npy differs from row 2 of .*keep_matrix.npy"):
        load_experiment(exp)
    save_npy(s["keep"][2], paths.model_dir(exp, 2) / paths.KEEP)
    (paths.model_dir(exp, 5) / paths.LOGITS).unlink()
    with pytest.raises(UsageError, match=r"shadows/5: logits.npy missing; recompute the signals with: "
                                         r"python -m training.signals .*dense/synthetic$"):
        load_experiment(exp)
    save_npy(s["logits"][5], paths.model_dir(exp, 5) / paths.LOGITS)
    save_npy(np.zeros((300, 3), np.float32), paths.model_dir(exp, 1) / paths.SENSITIVITY)
    with pytest.raises(UsageError, match=r"sensitivity.npy has shape \(300, 3\), expected \(300, 4\)"):
        load_experiment(exp)


def test_row_builders_for_the_unified_tables(tmp_path):
    exp = write_experiment(tmp_path, small(0))
    res = evaluate_experiment(exp, ["loss", "lira"], targets="all")
    row = wide_row(res)
    per_target_auc = [p["auc"] for p in res["attacks"]["loss"]["per_target"].values()]
    assert list(row)[:len(ROW_KEYS)] == list(ROW_KEYS) and row["loss_auc_std"] == pytest.approx(np.std(per_target_auc, ddof=1))
    assert row["loss_auc_std"] > 0 and row["lira_tpr_at_0.1pct_fpr_below_floor"] is True
    assert row["train_acc"] == pytest.approx(np.mean([0.99 - 0.001 * i for i in range(7)]))
    long = pd.DataFrame(long_rows(res))
    assert len(long) == 2 * 7 * 6  # attacks x targets x metrics (no 0.01% level with 150 non-members)
    assert set(long["metric"]) == {"auc", "accuracy", "advantage", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr", "eps_lower_bound"}


# -- measurements below the FPR floor, and what the ROC plot draws ---------------------------------------

def test_below_floor_flag_is_any_target_below_its_floor():
    # Targets differ in their number of non-members: one target below the floor flags the mean.
    a = {"per_target": {"0": {"tpr_at_0.1pct_fpr_below_floor": False}, "1": {"tpr_at_0.1pct_fpr_below_floor": True}}}
    assert below_floor(a, "tpr_at_0.1pct_fpr") is True and below_floor(a, "auc") is None
    a["per_target"]["1"]["tpr_at_0.1pct_fpr_below_floor"] = False
    assert below_floor(a, "tpr_at_0.1pct_fpr") is False


def test_privacy_utility_draws_points_below_the_floor_hollow_and_off_the_line():
    from analysis.plots import privacy_utility_figure

    col = "loss_tpr_at_0.1pct_fpr"
    df = pd.DataFrame({"experiment": ["dense", "static_0.5", "static_0.9"], "method": ["dense", "static", "static"],
                       "sparsity": [0.0, 0.5, 0.9], "test_acc": [0.9, 0.8, 0.7], col: [0.05, 0.02, 0.01],
                       f"{col}_below_floor": [False, True, False]})
    ax = privacy_utility_figure(df, "tpr_at_0.1pct_fpr").axes[0]
    drawn = {(line.get_label(), line.get_markerfacecolor() == "none"): list(line.get_xdata()) for line in ax.lines}
    assert drawn == {("dense", False): [0.05], ("static", False): [0.01], ("_below_floor", True): [0.02]}
    # without flags (AUC) every point is measured
    ax = privacy_utility_figure(df.drop(columns=f"{col}_below_floor"), "tpr_at_0.1pct_fpr").axes[0]
    assert [list(line.get_xdata()) for line in ax.lines] == [[0.05], [0.02, 0.01]]


def test_roc_plot_draws_one_target_from_its_floor_with_its_own_auc(tmp_path):
    from analysis.plots import roc_figure
    from analysis.report import roc_of

    res = evaluate_experiment(write_experiment(tmp_path, small(0)), ["loss"], targets="all")
    a = res["attacks"]["loss"]
    roc = roc_of(a)
    own = a["per_target"][str(roc["target"])]
    assert roc["auc"] == own["auc"] != a["mean"]["auc"]  # the drawn curve's AUC, not the mean over targets
    [line, chance] = roc_figure("dense", {"loss": roc}).axes[0].lines
    assert line.get_label() == f"loss (model {roc['target']}, AUC {own['auc']:.3f})"
    fpr = np.asarray(line.get_xdata())
    assert fpr.min() >= own["min_fpr"] > 1e-3 and (np.asarray(roc["fpr"]) < own["min_fpr"]).sum() > 100
    assert chance.get_xdata()[0] == own["min_fpr"]


# -- test_mia.py's null copy ------------------------------------------------------------------------------

def test_null_copy_permutes_membership_on_disk_and_catches_a_keep_structure_leak(tmp_path, monkeypatch):
    import dataclasses

    import test_mia
    from mia.attacks import ATTACKS, AttackOutput, AttackSettings

    s = small(0)
    exp = write_experiment(tmp_path / "runs", s)
    null = load_experiment(test_mia.permute_membership(exp, tmp_path / "null"))
    assert (null.keep.sum(0) == 7 // 2).all() and not np.array_equal(null.keep, s["keep"])  # balanced, permuted
    assert sorted(map(tuple, null.keep.T)) == sorted(map(tuple, s["keep"].T))  # the same columns, reordered
    np.testing.assert_array_equal(np.asarray(null.logits), s["logits"])  # signals and labels untouched
    np.testing.assert_array_equal(null.labels, s["labels"])
    assert np.load(exp / paths.KEEP_MATRIX).tolist() == s["keep"].tolist()  # the original is left alone

    # An attack that reads the shadows' keep counts (the target's members have one IN shadow fewer) scores
    # perfectly on the null copy too, since the permutation keeps that structure; confidence, which only
    # sees the signals, falls from a clear leak to chance.
    leak = lambda inp, st: AttackOutput(-inp.shadow_keep.sum(0).astype(float))  # noqa: E731
    monkeypatch.setitem(ATTACKS, "loss", dataclasses.replace(ATTACKS["loss"], fn=leak))
    assert evaluate_experiment(exp, ["confidence"])["attacks"]["confidence"]["mean"]["auc"] > 0.7
    rows = {c: (ok, d) for c, ok, d in test_mia.null_rows(exp, AttackSettings(), tmp_path, ["confidence", "loss"])}
    assert rows["null confidence"][0] and not rows["null loss"][0], rows
    assert "AUC 1.000" in rows["null loss"][1]


def test_when_no_experiment_can_be_evaluated_earlier_tables_are_kept(runs, tmp_path):
    """Every experiment refused (a target no experiment has): one line, exit 2, and the tables of an
    earlier evaluation stay as they were (not replaced by empty ones)."""
    ok = run("mia_wemem.py", "--runs-dir", runs, "--results-dir", tmp_path, "--attacks", "loss")
    assert ok.returncode == 0, ok.stderr
    table = tmp_path / "mia" / "wemem" / "wemem_mia_results.csv"
    before = table.read_text()
    bad = run("mia_wemem.py", "--runs-dir", runs, "--results-dir", tmp_path, "--attacks", "loss", "--targets", "0,99")
    assert bad.returncode == 2 and "nothing written, earlier results kept" in _error_lines(bad)[-1]
    assert table.read_text() == before and len(pd.read_csv(table)) == 2
