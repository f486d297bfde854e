"""analysis/stage.py end to end on synthetic run directories (no training): its tables, the report section, and
bad input (pairs from different studies: one line, exit 2; a dataset without images: the gallery skipped)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import section, stage
from artifacts import paths
from tests.mia_synthetic import synthetic_signals, write_experiment
from utils.io import load_json, save_text

DATASET = "tabular"  # feature vectors: the gallery must be skipped with a line


def study(root, seed_b=0):
    """dense and static_0.9 of one study (one keep matrix); static exposes every member more (gap 3 vs 1),
    and predicts class 0 for examples 0..9 in every model (PIEs by construction)."""
    dense = synthetic_signals(n=300, num_shadows=6, queries=1, classes=4, gap=1.0, seed=0)
    pruned = synthetic_signals(n=300, num_shadows=6, queries=1, classes=4, gap=3.0, seed=seed_b)
    pruned["labels"] = dense["labels"]
    pruned["logits"][:, :10, :, 0] = 50.0
    dense["logits"][:, :10, :, 0] = -50.0
    write_experiment(root / "runs", dense, dataset=DATASET)
    write_experiment(root / "runs", pruned, method="static", sparsity=0.9, dataset=DATASET, name="static_0.9")
    return dense, pruned


def test_stage_writes_its_tables_and_the_report_section(tmp_path):
    dense, pruned = study(tmp_path)
    res = tmp_path / "results"
    save_text("# report\n\n## What was trained\n\nx\n\n## Reproduce\n\ncmd\n", res / paths.REPORT)
    info = stage.run_stage(tmp_path / "runs", res, n_boot=50)
    assert info["pairs"] == [f"static_0.9 - dense ({DATASET})"]
    t = pd.read_csv(paths.per_example_file(res, f"dense_{DATASET}"))
    assert len(t) == 300 and {"mem", "mem_se", "exposure", "modal_prediction"} <= set(t.columns)
    assert (t["mem_n_in"] + t["mem_n_out"] == 6).all()  # 7 models, model 0 (the target) left out
    pair = pd.read_csv(paths.per_example_pair_file(res, "static_0.9", "dense", DATASET))
    assert pair["pie"][:10].all()  # modal class 0 pruned, never 0 dense
    assert pair["change"].median() > 0  # static exposes members more
    ch = pd.read_csv(paths.per_example_dir(res) / paths.EXPOSURE_CHANGES)
    assert ch.iloc[0]["class"] == "all" and len(ch) == 5  # the pool and each of the 4 classes
    assert np.isfinite(ch["spearman_cross_fit"]).all()  # dense is in the pair: cross-fitted on halves of its models
    assert (ch["cross_fit_ci_low"] <= ch["spearman_cross_fit"]).all() and "cross-fitted" in (res / paths.REPORT).read_text()
    pies = pd.read_csv(paths.per_example_dir(res) / paths.PIES)
    assert pies.loc[0, "pies"] >= 10
    pa = pd.read_csv(paths.per_example_dir(res) / paths.PAIR_ATTACK)
    assert set(pa["attack"]) == {"pair_lira", "pair_lira_offline"} and len(pa) == 2 * 2 * 3
    assert info["figures"][f"gallery_static_0.9__dense_{DATASET}"].startswith("skipped: tabular holds feature vectors")
    report = (res / paths.REPORT).read_text()
    assert report.count(section.TITLE) == 1 and report.index(section.TITLE) < report.index("## Reproduce")
    assert "gallery" in report and "skipped" in report
    section.write(res)  # a second run replaces the section, never adds one
    assert (res / paths.REPORT).read_text().count(section.TITLE) == 1
    assert load_json(paths.per_example_dir(res) / paths.STAGE_INFO)["stage_time_s"] > 0


def test_section_says_how_to_run_the_stage_when_it_has_not(tmp_path):
    text = "\n".join(section.lines(tmp_path))
    assert text.startswith(section.TITLE) and "python -m analysis.stage" in text


def test_pairing_configurations_with_different_keep_matrices_is_one_line_exit_2(tmp_path, capsys):
    study(tmp_path, seed_b=1)  # static_0.9's keep matrix comes from another seed
    with pytest.raises(SystemExit) as e:
        stage.main(["--runs-dir", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "results"),
                    "--pairs", "static_0.9:dense"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "different keep matrices" in err
    assert not (tmp_path / "results").exists()  # checked before anything is written
