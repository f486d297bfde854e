"""benchmarks/full_budget.py reads finished runs (summary) and unfinished ones (their resumable state) alike."""
import sys

import pandas as pd
import pytest

from benchmarks import full_budget
from artifacts import paths
from utils.io import save_json, save_torch


def _history(n, acc0):
    return [{"epoch": e + 1, "val_acc": acc0 + 0.01 * e, "train_acc": acc0 + 0.02 * e} for e in range(n)]


def _run(root, name, epochs, history, test_acc=None, complete=True):
    d = root / name / "npz"
    d.mkdir(parents=True)
    save_json({"name": name, "epochs": epochs}, d / paths.CONFIG)
    if complete:
        save_json({"history": history, "test_acc": test_acc}, d / paths.SUMMARY)
        (d / paths.COMPLETE).touch()
    else:
        save_torch({"history": history}, d / paths.RESUME)
    shadow = d / "shadows" / "0"  # a shadow is never reported as a configuration
    shadow.mkdir(parents=True)
    save_json({"name": name + "_shadow", "epochs": epochs}, shadow / paths.CONFIG)


def test_table_reads_finished_and_resumable_runs_and_plots(tmp_path, monkeypatch, capsys):
    _run(tmp_path, "static_0.9", 4, _history(4, 0.5), test_acc=0.61)
    _run(tmp_path, "dpf_0.9", 4, _history(2, 0.4), complete=False)
    t = full_budget.table(full_budget.runs(tmp_path)).set_index("configuration")
    assert sorted(t.index) == ["dpf_0.9", "static_0.9"]
    assert t.loc["static_0.9", "epochs_done"] == 4 and t.loc["static_0.9", "test_acc"] == 0.61
    assert t.loc["static_0.9", "val_acc_best"] == pytest.approx(0.53) and t.loc["static_0.9", "complete"]
    assert t.loc["dpf_0.9", "epochs_done"] == 2 and not t.loc["dpf_0.9", "complete"]
    assert t.loc["dpf_0.9", "val_acc_last"] == pytest.approx(0.41) and pd.isna(t.loc["dpf_0.9", "test_acc"])
    png = tmp_path / "curves.png"
    monkeypatch.setattr(sys, "argv", ["full_budget.py", "--runs-dir", str(tmp_path), "--plot", str(png)])
    full_budget.main()
    assert png.stat().st_size > 0 and "static_0.9" in capsys.readouterr().out


def test_no_runs_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["full_budget.py", "--runs-dir", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as e:
        full_budget.main()
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
