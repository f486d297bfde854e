"""The README's "Extending" section, checked: one toy entry in each registry (dataset, architecture,
pruning method, attack) and nothing else, then the whole study through train.py's own main (in process,
so the monkeypatched registries are seen): CLI help and validation, training of the target and its
shadows, signals, the attack, CSVs and plots. Seconds on a CPU."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch.nn as nn
from scipy.special import logsumexp

import train
from artifacts import paths
from data.datasets import DATASETS, DatasetSpec, from_arrays
from mia.attacks import ATTACKS, AttackOutput, AttackSpec
from models import ARCHS, ArchSpec
from pruning import PRUNING_METHODS
from utils.io import load_json


# -- the four entries a newcomer writes (README "Extending") ---------------------------------------

def load_toy(cfg):
    """72 random 8x8 grayscale images of 3 classes: 48 form the pool, 24 the test split."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (72, 8, 8), dtype=np.uint8)
    y = np.arange(72) % 3
    return from_arrays("toy", x[:48], y[:48], x[48:], y[48:])


def build_toy(layers, width_factor, num_classes, in_channels):
    """One convolution (so pruning has something to prune), pooled, then a linear classifier."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, num_classes))


def toy_loss(inp, st):
    """-CE of the identity query: higher = member."""
    z = np.asarray(inp.target_logits[:, 0], np.float64)
    return AttackOutput(z[np.arange(len(z)), inp.labels] - logsumexp(z, axis=1))


@pytest.fixture
def toy_entries(monkeypatch):
    monkeypatch.setitem(DATASETS, "toy", DatasetSpec(load_toy, "72 random 8x8 images, 3 classes"))
    monkeypatch.setitem(ARCHS, "toy", ArchSpec(build_toy, lambda layers: layers == 1, (1,), default_layers=1))
    monkeypatch.setitem(PRUNING_METHODS, "toy_gmp",
                        dataclasses.replace(PRUNING_METHODS["gmp"], description="gmp under another name", extra=False))
    monkeypatch.setitem(ATTACKS, "toy_loss", AttackSpec(toy_loss, "toy loss", "wemem", description="-CE, query 0"))


# -- what reads the registries ------------------------------------------------------------------------

def test_help_and_defaults_read_the_registries(toy_entries):
    text = train.build_parser().format_help()
    for flag, entry in (("--dataset", "toy"), ("--arch", "toy"), ("--methods", "toy_gmp"), ("--attacks", "toy_loss")):
        section = text[text.index(f"\n  {flag} "):]  # the flag's own help, up to the next flag
        assert entry in section[:section.index("\n  --", 1)], (flag, entry)
    assert "toy_gmp" in train.parse([]).methods  # not an extra: part of the default comparison


def test_a_toy_entry_of_each_kind_runs_end_to_end(toy_entries, tmp_path, one_thread):
    runs, results = tmp_path / "runs", tmp_path / "results"
    train.main(["--dataset", "toy", "--arch", "toy", "--methods", "dense", "toy_gmp", "--sparsities", "0.5",
                "--epochs", "1", "--batch-size", "16", "--num-shadows", "2", "--sens-draws", "2",
                "--attacks", "toy_loss", "--device", "cpu", "--runs-dir", str(runs), "--results-dir", str(results),
                "--summary-dir", str(tmp_path)])

    exp = paths.experiment_dir(runs, "toy_gmp", 0.5, "toy")  # the method's and the dataset's names
    cfg = load_json(exp / paths.CONFIG)
    assert (cfg["method"], cfg["arch"], cfg["layers"]) == ("toy_gmp", "toy", 1)  # --layers: the arch's default
    for i in range(3):
        assert (paths.model_dir(exp, i) / paths.COMPLETE).exists(), i
    assert load_json(paths.model_dir(exp, 0) / paths.SUMMARY)["measured_sparsity"] == pytest.approx(0.5, abs=0.02)

    df = pd.read_csv(results / "comprehensive_mia_results.csv").set_index("experiment")
    assert sorted(df.index) == ["dense", "toy_gmp_0.5"]
    assert df.loc["toy_gmp_0.5", "method"] == "toy_gmp" and df.loc["toy_gmp_0.5", "dataset"] == "toy"
    assert df["toy_loss_auc"].between(0, 1).all()  # the toy attack's column, finite, for both configurations
    assert (results / "plots" / "heatmap_auc.png").exists()
