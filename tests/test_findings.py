"""The report's Findings (analysis/findings.py) and the sparsity figure on synthetic studies built without training:
a planted ordering holds, a planted reversal is reversed, a null study resolves nothing, a missing configuration
is named; and on the quick preset's code path (tests/test_pipeline.py runs it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artifacts import paths
from configs.evaluation import EvaluationConfig
from mia.attacks import AttackSettings
from analysis.compare import Settings
from analysis.findings import CLOSE, study_findings
from mia.unified_mia_evaluation import run_unified
from tests.mia_synthetic import synthetic_signals, write_experiment
from utils.io import load_json, save_json

ATTACKS = ["confidence", "loss", "lira_offline"]
FAST = Settings(n_boot=200, seed=0, level=0.95)


def study(root: Path, gaps: dict, accs: dict, noise: bool = True) -> pd.DataFrame:
    """Configurations (method, sparsity) -> membership gap (leakage) and test accuracy, one keep matrix and
    pool for all (paired); each configuration its own model noise when `noise`. Returns findings.csv."""
    runs = root / "runs"
    for k, ((method, s), gap) in enumerate(gaps.items()):
        sig = synthetic_signals(n=400, num_shadows=5, queries=2, classes=4, gap=gap, seed=0,
                                noise_seed=k if noise else 0)
        exp = write_experiment(runs, sig, method, s)
        rng = np.random.default_rng(100 + k)
        for i in range(len(sig["keep"])):  # accuracy planted per configuration, a little noise per model
            f = paths.model_dir(exp, i) / paths.SUMMARY
            acc = accs[method, s] + rng.normal(0, 0.002)
            save_json({**load_json(f), "model_index": i, "test_acc": acc, "train_acc": min(1.0, acc + 0.1)}, f)
    cfg = EvaluationConfig(results_dir=root / "results", attacks=list(ATTACKS), targets="all", n_boot=FAST.n_boot,
                           bootstrap_seed=FAST.seed, level=FAST.level)
    run_unified(sorted(paths.find_experiments(runs)), cfg, AttackSettings(device="cpu"), commands=["python test"])
    return pd.read_csv(root / "results" / paths.FINDINGS)


def verdicts(found: pd.DataFrame) -> dict:
    return {(r["claim"], r["sparsity"]): r["verdict"] for r in found.to_dict("records")}


CONFIGS = [("dense", 0.0), ("static", 0.5), ("static", 0.9), ("dpf", 0.5), ("dpf", 0.9)]


def test_a_planted_ordering_holds_and_a_planted_reversal_is_reversed(tmp_path):
    # the study's expectations, planted: dense leaks most and is most accurate, DPF between, static least;
    # both fall with sparsity; except at 0.9, where static is planted above DPF (a reversal of 'DPF > static')
    gaps = {("dense", 0.0): 3.0, ("static", 0.5): 2.0, ("static", 0.9): 1.0, ("dpf", 0.5): 2.0, ("dpf", 0.9): 1.0}
    accs = {("dense", 0.0): 0.90, ("static", 0.5): 0.80, ("static", 0.9): 0.75, ("dpf", 0.5): 0.85, ("dpf", 0.9): 0.70}
    found = study(tmp_path, gaps, accs)
    v = verdicts(found)
    assert v["dense more accurate than DPF", 0.5] == v["dense more accurate than DPF", 0.9] == "holds"
    assert v["DPF more accurate than static", 0.5] == "holds"
    assert v["DPF more accurate than static", 0.9] == "reversed"
    assert v["static: accuracy lower at higher sparsity", 0.9] == v["dpf: accuracy lower at higher sparsity", 0.9] == "holds"
    for m in ("static", "dpf"):
        assert v[f"dense leaks more than {m}", 0.5] == v[f"dense leaks more than {m}", 0.9] == "holds"
        assert v[f"{m}: leakage lower at higher sparsity", 0.9] == "holds"
    # every interval behind a verdict excludes zero on the verdict's side
    leak = found[found["verdict"] == "holds"]
    assert ((leak["ci_high"] < 0) | (leak["ci_low"] > 0)).all()
    # the leakage rows carry the fit of both configurations and how many attacks agree
    row = found[(found["claim"] == "dense leaks more than static") & (found["sparsity"] == 0.9)].iloc[0]
    assert row["attacks_tested"] == len(ATTACKS) and row["attacks_agree"] >= 2
    assert row["a_train_acc"] == pytest.approx(0.85, abs=0.01) and row["b_train_acc"] == pytest.approx(1.0, abs=0.01)
    assert "also fits less" in row["fit_note"] and "has not fit" in row["fit_note"]  # 0.85 < 0.9: flagged
    report = (tmp_path / "results" / paths.REPORT).read_text()
    assert report.index("## Findings") < report.index("## What was trained")
    assert "**DPF more accurate than static**: holds at 0.5; reversed at 0.9." in report
    assert (tmp_path / "results" / paths.PLOTS / "sparsity_sweep.png").stat().st_size > 10_000
    assert "plots/sparsity_sweep.png" in report


def test_a_null_study_resolves_nothing(tmp_path):
    """Every configuration the same leakage and accuracy, each its own model noise: no verdict but
    'not resolved' (at the report's corrected level, one family; DPF 'close to static' then holds)."""
    gaps = {c: 2.0 for c in CONFIGS}
    accs = {c: 0.8 for c in CONFIGS}
    found = study(tmp_path, gaps, accs)
    close = found["claim"] == CLOSE
    assert (found.loc[~close, "verdict"] == "not resolved").all(), found.loc[~close, ["claim", "sparsity", "verdict"]]
    assert (found.loc[close, "verdict"] == "not resolved").all()
    assert "**DPF leaks as static does**: holds (no difference resolved) at 0.5, 0.9." in (
        tmp_path / "results" / paths.REPORT).read_text()


def test_a_missing_configuration_is_named():
    """A study of dense and DPF only, at one sparsity: the findings that need static or two sparsities say so."""
    iv = pd.DataFrame({"experiment": ["dense", "dpf_0.9"], "method": ["dense", "dpf"], "sparsity": [0.0, 0.9],
                       "dataset": ["d", "d"]})
    paired = pd.DataFrame({"a": ["dpf_0.9"], "b": ["dense"], "attack": [""], "metric": ["test_acc"], "difference": [-0.1],
                           "ci_low": [-0.12], "ci_high": [-0.08], "p_adjusted": [0.001], "significant": [True],
                           "family": ["report"]})
    training = pd.DataFrame({"experiment": ["dense", "dpf_0.9"], "dataset": ["d", "d"], "model_index": [0, 0],
                             "train_acc": [1.0, 0.9], "test_acc": [0.8, 0.7]})
    v = verdicts(study_findings(paired, iv, training, "lira"))
    assert v["dense more accurate than DPF", 0.9] == "holds"
    assert v["DPF more accurate than static", 0.9] == "cannot state: static at sparsity 0.9 not in the study"
    assert v["dense leaks more than dpf", 0.9] == "cannot state: dpf_0.9 - dense has no paired lira auc"
    assert v["dpf: leakage lower at higher sparsity", 0.9] == "cannot state: one sparsity in the study (needs two)"


# -- the presets: absent data, the cost before anything trains ----------------------------------------------------

def _offline(monkeypatch):
    """torchvision's CIFAR-10 absent and no network: what a fresh machine offline sees."""
    import urllib.error

    import torchvision

    def absent(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", absent)


def test_the_reference_preset_is_refused_in_one_line_when_its_data_are_absent(tmp_path, monkeypatch, capsys):
    import train

    _offline(monkeypatch)
    with pytest.raises(SystemExit) as e:
        train.main(["--preset", "cifar10-cpu", "--data-dir", str(tmp_path / "none"), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith("error: CIFAR10 not found in") and "cifar-10-python.tar.gz" in err[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("COMPLETE"))


def test_dry_run_states_the_cost_before_anything_trains(tmp_path, monkeypatch, capsys):
    import train

    _offline(monkeypatch)
    train.main(["--preset", "cifar10-cpu", "--data-dir", str(tmp_path / "none"), "--runs-dir", str(tmp_path / "r"),
                "--dry-run"])
    out = capsys.readouterr().out
    assert "99 trainings (99 to run" in out
    # pool 500 over 9 models: every example in 4 of them, the smallest set 217 -> 6 steps of 32 a epoch
    assert "dense: 9 model(s) x 100 epochs x 192 images = 19,200 training images each" in out
    assert "estimated cost: 99 model(s); time not estimated: CIFAR10 not found" in out
    train.main(["--preset", "quick", "--runs-dir", str(tmp_path / "q"), "--dry-run"])  # data present: a time
    out = capsys.readouterr().out
    assert "estimated cost: 27 model(s), ~" in out and "images/s" in out
    assert not list(tmp_path.rglob("COMPLETE"))


def test_per_method_claims_that_cannot_be_stated_for_one_reason_are_one_sentence():
    """A study at one sparsity: 'cannot state' for every method's sparsity claim is one line naming the methods;
    a claim with a verdict keeps its own line."""
    rows = [{"dataset": "d", "claim": f"{m}: leakage lower at higher sparsity", "sparsity": 0.9, "pair": "",
             "verdict": "cannot state: one sparsity in the study (needs two)"} for m in ("dpf", "static")]
    rows.append({"dataset": "d", "claim": "dense leaks more than static", "sparsity": 0.9, "pair": "static_0.9 - dense",
                 "verdict": "holds"})
    from analysis.findings import claim_sentences

    s = [x for _, x in claim_sentences(pd.DataFrame(rows))]
    assert s == ["**leakage lower at higher sparsity** (dpf, static): cannot state: one sparsity in the study "
                 "(needs two) at 0.9.", "**dense leaks more than static**: holds at 0.9."]
