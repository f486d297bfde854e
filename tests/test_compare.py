"""mia/compare.py and analysis/report.py on synthetic run directories: saved scores, paired comparisons of a
study's configurations, per-class AUC, the report. (The bootstrap's statistics: tests/test_bootstrap.py.)"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from artifacts import paths
from configs.evaluation import EvaluationConfig
from mia.attacks import AttackSettings
from analysis.compare import Settings, load_evaluations, run_comparisons
from mia.evaluate import evaluate_experiment
from mia.unified_mia_evaluation import run_unified
from tests.mia_synthetic import synthetic_signals, write_experiment
from utils.io import load_json, load_npy, save_json

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ["confidence", "loss", "lira_offline"]  # fast ones; every attack saves scores the same way
FAST = Settings(n_boot=200, seed=0, level=0.95)


def small(seed=0, gap=2.0):
    return synthetic_signals(n=400, num_shadows=4, queries=2, classes=4, gap=gap, seed=seed)


def evaluate(runs: Path, out: Path, targets="all", pairs=None):
    cfg = EvaluationConfig(results_dir=out, attacks=list(ATTACKS), targets=targets, n_boot=FAST.n_boot,
                           bootstrap_seed=FAST.seed, level=FAST.level, pairs=pairs)
    return run_unified(sorted(paths.find_experiments(runs)), cfg, AttackSettings(device="cpu"), commands=["python test"])


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """dense and a byte-identical copy of it under another name (the same models copied)."""
    root = tmp_path_factory.mktemp("copies")
    dense = write_experiment(root / "runs", small(0))
    copy = paths.experiment_dir(root / "runs", "static", 0.9, "synthetic")
    shutil.copytree(dense, copy)
    save_json({**load_json(dense / paths.CONFIG), "name": "static_0.9", "method": "static", "sparsity": 0.9},
              copy / paths.CONFIG)
    evaluate(root / "runs", root / "results")
    return root


def test_saved_scores_reproduce_the_reported_auc(copies):
    """Each attack's per-target scores are saved (float64) with the target's membership; the AUC
    recomputed from the files is the one the evaluation reported."""
    evals = load_evaluations(paths.mia_results_dir(copies / "results", "unified"))
    for ev in evals:
        assert ev.targets == [0, 1, 2, 3, 4]
        for attack in ATTACKS:
            for t, s, m in zip(ev.targets, ev.scores(attack), ev.members()):
                assert s.dtype == np.float64 and s.shape == (400,)
                assert np.array_equal(m, small(0)["keep"][t])
                assert roc_auc_score(m, s) == pytest.approx(ev.res["attacks"][attack]["per_target"][str(t)]["auc"], abs=1e-12)


def test_identical_configurations_differ_by_exactly_zero(copies):
    paired = pd.read_csv(copies / "results" / paths.PAIRED)
    assert set(paired["pair"]) == {"static_0.9 - dense"}  # the default pairs: each pruned one against dense
    assert set(paired["attack"].fillna("")) == {*ATTACKS, ""} and "test_acc" in set(paired["metric"])
    assert (paired["difference"] == 0).all()
    assert ((paired["ci_low"] <= 0) & (paired["ci_high"] >= 0)).all()
    assert not paired["excludes_zero"].any()
    assert (paired["num_targets"] == 5).all()


def test_intervals_contain_the_value_and_per_class_matches_sklearn(copies):
    iv = pd.read_csv(copies / "results" / paths.INTERVALS)
    assert len(iv) == 2 * len(ATTACKS) * 3  # configurations x attacks x (auc, tpr at 1%, 0.1%)
    assert ((iv["ci_low"] <= iv["value"]) & (iv["value"] <= iv["ci_high"])).all()
    assert iv.loc[iv["metric"] == "tpr_at_0.1pct_fpr", "below_floor"].all()  # ~200 non-members: 1/200 > 0.1%
    assert not iv.loc[iv["metric"] == "auc", "below_floor"].any()
    pc = pd.read_csv(copies / "results" / paths.PER_CLASS)
    sig = small(0)
    ev = load_evaluations(paths.mia_results_dir(copies / "results", "unified"))[0]
    row = pc[(pc["experiment"] == ev.name) & (pc["attack"] == "loss")].iloc[0]
    for c in range(4):
        per_target = [roc_auc_score(m[sig["labels"] == c], s[sig["labels"] == c])
                      for s, m in zip(ev.scores("loss"), ev.members())]
        assert row[f"auc_class_{c}"] == pytest.approx(np.mean(per_target), abs=1e-12)
    vals = row[[f"auc_class_{c}" for c in range(4)]].to_numpy(float)
    assert row["auc_range"] == pytest.approx(vals.max() - vals.min()) and row["auc_min"] == vals.min()


def test_report_holds_every_configuration_attack_and_figure(copies):
    text = (copies / "results" / paths.REPORT).read_text()
    for name in ("dense", "static_0.9", *ATTACKS, "static_0.9 - dense", "## Reproduce", "python mia/compare.py"):
        assert name in text, name
    for image in ("plots/privacy_utility_auc.png", "plots/per_class_auc.png", "plots/heatmap_auc.png"):
        assert f"]({image})" in text and (copies / "results" / image).stat().st_size > 5000


def test_a_real_difference_is_significant_and_a_null_one_is_not(tmp_path):
    """B is A with the membership signal removed (gap 0): A - B in AUC is large and its interval
    excludes 0; the two null configurations' difference is not significant."""
    runs = tmp_path / "runs"
    write_experiment(runs, small(0, gap=3.0))
    write_experiment(runs, small(0, gap=0.0), method="static", sparsity=0.9)
    write_experiment(runs, small(0, gap=0.0) | {"logits": small(1, gap=0.0)["logits"]}, method="dpf", sparsity=0.9)
    evaluate(runs, tmp_path / "results", targets="all", pairs=["dense:static_0.9", "dpf_0.9:static_0.9"])
    paired = pd.read_csv(tmp_path / "results" / paths.PAIRED).set_index(["pair", "attack", "metric"])
    strong = paired.loc[("dense - static_0.9", "lira_offline", "auc")]
    assert strong["difference"] > 0.2 and strong["excludes_zero"] and strong["ci_low"] > 0
    null = paired.loc[("dpf_0.9 - static_0.9", "lira_offline", "auc")]
    assert abs(null["difference"]) < 0.05 and null["ci_low"] < 0 < null["ci_high"]


def test_unpaired_configurations_are_refused_in_one_line_and_the_rest_written(tmp_path):
    """A configuration with another keep matrix (another --mia-seed) cannot be paired."""
    runs = tmp_path / "runs"
    write_experiment(runs, small(0))
    write_experiment(runs, small(5), method="static", sparsity=0.9)  # keep matrix of seed 5
    _, failures = evaluate(runs, tmp_path / "results")
    assert len(failures) == 1 and "not paired" in failures[0] and "Traceback" not in failures[0]
    assert (tmp_path / "results" / paths.REPORT).exists() and len(pd.read_csv(tmp_path / "results" / paths.INTERVALS))


def test_compare_cli_rebuilds_from_saved_scores_without_the_runs(copies, tmp_path):
    """The results directory alone (runs deleted) rebuilds comparisons and report; bad --pairs is one line."""
    res = tmp_path / "results"
    shutil.copytree(copies / "results", res)
    (res / paths.PAIRED).unlink()
    (res / paths.REPORT).unlink()
    r = subprocess.run([sys.executable, "mia/compare.py", "--results-dir", str(res), "--n-boot", "50",
                        "--pairs", "dense:static_0.9"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    paired = pd.read_csv(res / paths.PAIRED)
    assert set(paired["pair"]) == {"dense - static_0.9"} and (paired["n_boot"] == 50).all()
    assert "dense - static_0.9" in (res / paths.REPORT).read_text()
    bad = subprocess.run([sys.executable, "mia/compare.py", "--results-dir", str(res), "--pairs", "dense"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "A:B" in bad.stderr
    empty = subprocess.run([sys.executable, "mia/compare.py", "--results-dir", str(tmp_path / "none")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert empty.returncode == 2 and "no evaluation" in empty.stderr and "Traceback" not in empty.stderr


def test_scores_of_a_single_target_run_pair_with_an_all_targets_run(tmp_path):
    """Resamples are keyed by model index: dense evaluated on all targets and static on target 0 only
    compare on target 0, with the same resamples as an evaluation of both on target 0 alone."""
    runs = tmp_path / "runs"
    write_experiment(runs, small(0))
    write_experiment(runs, small(1) | {"keep": small(0)["keep"], "labels": small(0)["labels"]}, method="static", sparsity=0.9)
    out = tmp_path / "results"
    unified = paths.mia_results_dir(out, "unified")
    from mia.evaluate import write_results

    res = [evaluate_experiment(e, ATTACKS, t, AttackSettings(device="cpu"), suite_dir=unified)
           for e, t in zip(sorted(paths.find_experiments(runs)), ("all", "0"))]
    write_results(res, unified, paths.COMPREHENSIVE)
    mixed = run_comparisons(out, None, FAST).paired
    assert (mixed["num_targets"] == 1).all()
    res = [evaluate_experiment(e, ATTACKS, "0", AttackSettings(device="cpu"), suite_dir=unified)
           for e in sorted(paths.find_experiments(runs))]
    write_results(res, unified, paths.COMPREHENSIVE)
    same = run_comparisons(out, None, FAST).paired
    pd.testing.assert_frame_equal(mixed, same)
    assert load_npy(paths.members_file(paths.scores_dir(unified, "dense_synthetic"), 0)).dtype == bool


@pytest.mark.parametrize("n_configs", [3, 11, 25])
def test_heatmap_labels_never_overlap(tmp_path, n_configs):
    """The study's 11 configurations (and more) stay legible: no two tick labels' boxes intersect."""
    import matplotlib.pyplot as plt

    from analysis import plots
    from mia.attacks import ATTACKS

    rng = np.random.default_rng(0)
    names = ["dense"] + [f"{m}_{s}" for m in ("static", "dpf", "gmp") for s in (0.5, 0.7, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999)]
    df = pd.DataFrame({"experiment": names[:n_configs], "dataset": "cifar10",
                       **{f"{a}_auc": rng.uniform(0.5, 0.7, n_configs) for a in ATTACKS}})
    captured = {}
    real_save = plots.save_figure
    plots.save_figure = lambda fig, path: captured.setdefault("fig", fig) and path
    try:
        plots.heatmap(df, "auc", tmp_path / "h.png")
    finally:
        plots.save_figure = real_save
    fig = captured["fig"]
    fig.canvas.draw()
    ax = fig.axes[0]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        boxes = [t.get_window_extent() for t in labels if t.get_text()]
        assert len(boxes) in (len(ATTACKS), n_configs)
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_paired_rows_carry_flags_families_and_corrected_marks(copies):
    """Every paired row has its raw p-value beside its family's adjusted one; the 0.1% level (~200
    non-members) is below the floor, in no family and never significant; 1% FPR with ~200 non-members
    allows 2 false positives: coarse, shown but in no family; identical configurations: nothing significant; 5 targets: the
    intervals cover examples and training seeds. Per class: counts, ranked classes, no class named."""
    paired = pd.read_csv(copies / "results" / paths.PAIRED, keep_default_na=False, na_values=[""])
    floor = paired["metric"] == "tpr_at_0.1pct_fpr"
    assert paired.loc[floor, "below_floor"].all() and paired.loc[floor, "family"].isna().all()
    coarse = paired["metric"] == "tpr_at_1pct_fpr"
    assert paired.loc[coarse, "coarse"].all() and not paired.loc[floor, "coarse"].any()
    assert paired.loc[coarse, "family"].isna().all() and paired.loc[coarse, "p_value"].notna().all()  # shown, untested
    tested = ~floor & ~coarse
    assert set(paired.loc[tested, "family"]) == {"report"}  # one family: every tested cell, test accuracy included
    assert (paired.loc[tested, "p_adjusted"] >= paired.loc[tested, "p_value"]).all()
    assert not paired["significant"].any() and (paired["covers"].str.startswith("examples and training seeds")
                                                 | (paired["metric"] == "test_acc")).all()
    pc = pd.read_csv(copies / "results" / paths.PER_CLASS)
    assert (pc["classes_ranked"] == 4).all() and pc["most_exposed"].isna().all()  # the same model twice: no signal
    assert (pc[[f"members_class_{c}" for c in range(4)]].to_numpy() >= 10).all()
    assert ((pc["ci_low_class_0"] <= pc["auc_class_0"]) & (pc["auc_class_0"] <= pc["ci_high_class_0"])).all()


def test_one_target_report_says_examples_only(tmp_path):
    """With one target the paired table says its intervals cover examples only; test accuracy has no
    interval."""
    runs = tmp_path / "runs"
    write_experiment(runs, small(0))
    write_experiment(runs, small(0, gap=1.0), method="static", sparsity=0.9)
    evaluate(runs, tmp_path / "results", targets="0")
    text = (tmp_path / "results" / paths.REPORT).read_text()
    assert "examples only (1 target)" in text and "covers the examples only" in text
    paired = pd.read_csv(tmp_path / "results" / paths.PAIRED)
    acc = paired[paired["metric"] == "test_acc"].iloc[0]
    assert np.isnan(acc["ci_low"]) and acc["family"] != "report" and not acc["significant"]
    assert (paired.loc[paired["metric"] != "test_acc", "covers"] == "examples").all()
