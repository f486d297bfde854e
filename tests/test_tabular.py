"""The whole study on the embedded tabular set with the MLP (issue 21): train.py's own main trains the dense
target and 4 shadows, writes one query view, runs every attack and writes the CSVs and the report; the MLP
leaks clearly, and on test_mia.py's null copy (membership permuted on disk) the attacks are at chance.
(Every pruning method on the MLP: tests/test_archs.py; the quick preset covers pruned configurations end to
end. One configuration here keeps the attack networks' training, most of this test's time, to one pass.)"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from artifacts import paths


@pytest.fixture(scope="module")
def tabular_study(tmp_path_factory, one_thread):
    import train

    tmp = tmp_path_factory.mktemp("tabular")
    train.main(["--dataset", "tabular", "--arch", "mlp", "--methods", "dense",
                "--pool-size", "600", "--epochs", "12", "--batch-size", "32", "--num-shadows", "4", "--sens-draws", "2",
                "--device", "cpu", "--runs-dir", str(tmp / "runs"), "--results-dir", str(tmp / "results"),
                "--summary-dir", str(tmp)])
    return tmp


def test_every_attack_runs_on_one_query_view(tabular_study):
    from mia.attacks import ATTACKS

    tmp = tabular_study
    exp = paths.experiment_dir(tmp / "runs", "dense", 0.0, "tabular")
    assert np.load(paths.model_dir(exp, 0) / paths.LOGITS).shape == (600, 1, 20)  # [pool, 1 view, classes]
    df = pd.read_csv(tmp / "results" / "comprehensive_mia_results.csv").set_index("experiment")
    assert list(df.index) == ["dense"] and df.loc["dense", "arch"] == "mlp-2"
    aucs = df[[f"{a}_auc" for a in ATTACKS]]
    assert aucs.notna().all().all() and aucs.apply(lambda c: c.between(0, 1)).all().all()
    report = (tmp / "results" / paths.REPORT).read_text()
    assert "tabular" in report and "lira" in report
    assert len(pd.read_csv(tmp / "training_results.csv")) == 5


def test_the_dense_mlp_leaks_clearly(tabular_study):
    """An overfit MLP on many-class binary records: train accuracy near 1, test far below, and the
    loss-type attacks well above chance (the reason this set is the tabular tests' data)."""
    df = pd.read_csv(tabular_study / "results" / "comprehensive_mia_results.csv").set_index("experiment")
    assert df.loc["dense", "train_acc"] - df.loc["dense", "test_acc"] > 0.3
    assert df.loc["dense", ["loss_auc", "lira_auc"]].min() > 0.65, df.loc["dense"].filter(like="_auc").to_dict()


def test_the_attacks_reading_the_query_axis_are_at_chance_on_a_null_copy(tabular_study, tmp_path):
    """LiRA (online, offline), RMIA and the threshold attacks read the query axis, here of length 1; the
    learned attacks read query 0 only and are null-tested on images (test_mia.py, tests/test_defenses.py)."""
    import test_mia
    from mia.attacks import ATTACKS, AttackSettings

    exp = paths.experiment_dir(tabular_study / "runs", "dense", 0.0, "tabular")
    attacks = [a for a, spec in ATTACKS.items() if "nn_" not in spec.settings]
    assert {"lira", "lira_offline", "rmia", "loss"} <= set(attacks)
    rows = test_mia.null_rows(exp, AttackSettings(), tmp_path, attacks)
    assert len(rows) == len(attacks)  # each ran
    assert all(ok for _, ok, _ in rows), [r for r in rows if not r[1]]
