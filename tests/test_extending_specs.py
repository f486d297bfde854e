"""A defense and a dataset added as the README's "Extending" says, and nothing else: a defense is its loss
(one function with one parameter, below) and one registry line (the fixture); a dataset is its loader and
one DatasetSpec line. Everything else is read from the registries: the defense's flag and help in both
scripts, its default, its one-line refusals, its config.json key and its rows in a study's CSVs and report;
the dataset's spec fields (embedded, data_path, feature_vectors) in --help, the checks and the defaults."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import run_experiment
import train
from artifacts import paths
from data.datasets import DATASETS, DatasetSpec, from_arrays
from defenses import DEFENSES, DefenseSpec, Param, build_loss
from defenses.base import cross_entropy
from models import ARCHS, ArchSpec
from tests.script_runs import run_main
from tests.test_extending import build_toy, load_toy


# -- the entries a newcomer writes ----------------------------------------------------------------------

def squared_logit_loss(logits, labels, epoch, weight):
    """Cross-entropy plus weight x the mean squared logit, per model [K]: a confidence penalty."""
    return cross_entropy(logits, labels).mean(0) + weight * logits.float().square().mean((0, 2))


def load_toy_vectors(cfg):
    """60 records of 5 binary features, 3 classes: 40 form the pool, 20 the test split."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (60, 5)).astype(np.uint8)
    return from_arrays("toyvec", x[:40], np.arange(40) % 3, x[40:], np.arange(20) % 3)


@pytest.fixture
def toy_defense(monkeypatch):
    monkeypatch.setitem(DEFENSES, "sqlogit", DefenseSpec(
        squared_logit_loss, "CE + w x mean squared logit", "a test",
        (Param("weight", 0.25, lambda v: v >= 0, ">= 0", "weight w of the squared-logit penalty"),)))


@pytest.fixture
def toy_datasets(monkeypatch):
    monkeypatch.setitem(DATASETS, "toyvec", DatasetSpec(load_toy_vectors, "toy records", feature_vectors=True,
                                                        embedded=True))
    monkeypatch.setitem(DATASETS, "toyfile", DatasetSpec(load_toy, "toy images from a file", data_path="FILE.toy"))


def _help(main, capsys) -> str:
    code, out, _ = run_main(main, ["--help"], capsys)
    assert code == 0
    return " ".join(out.split())  # argparse wraps lines


# -- the defense ------------------------------------------------------------------------------------------

def test_the_defense_flag_and_help_are_in_both_scripts(toy_defense, capsys):
    for main in (run_experiment.main, train.main):
        text = _help(main, capsys)
        assert ("--sqlogit-weight SQLOGIT_WEIGHT sqlogit: weight w of the squared-logit penalty, >= 0 "
                "(default with --defense sqlogit: 0.25) (default: None)") in text, main.__module__
        defense_help = text[text.index("--defense DEFENSE"):]
        assert "sqlogit" in defense_help[:defense_help.index(" --", 3)]


def test_the_defense_default_fills_and_reaches_the_loss(toy_defense):
    cfg = run_experiment.parse_config(["--dataset", "digits", "--defense", "sqlogit"])
    assert cfg.sqlogit_weight == 0.25 and cfg.defense_params == {"sqlogit_weight": 0.25}
    assert run_experiment.parse_config(["--dataset", "digits"]).sqlogit_weight is None  # only with its defense
    given = run_experiment.parse_config(["--dataset", "digits", "--defense", "sqlogit", "--sqlogit-weight", "2"])
    z = torch.randn(6, 2, 3, dtype=torch.float64)
    y = torch.randint(0, 3, (6, 2))
    ce = torch.nn.functional.cross_entropy(z.transpose(1, 2), y, reduction="none").mean(0)
    torch.testing.assert_close(build_loss(given)(z, y, 0), ce + 2.0 * (z ** 2).mean((0, 2)))
    torch.testing.assert_close(build_loss(cfg)(z, y, 0), ce + 0.25 * (z ** 2).mean((0, 2)))


@pytest.mark.parametrize("argv, line", [
    (["--defense", "sqlogit", "--sqlogit-weight", "-1"], "error: --sqlogit-weight must be >= 0, got -1.0"),
    (["--sqlogit-weight", "1"], "error: --sqlogit-weight applies to --defense sqlogit only, not --defense none"),
    (["--defense", "ppb", "--sqlogit-weight", "1"],
     "error: --sqlogit-weight applies to --defense sqlogit only, not --defense ppb"),
])
def test_a_bad_defense_value_is_one_line(toy_defense, capsys, argv, line):
    code, _, err = run_main(run_experiment.main, ["--dataset", "digits", *argv], capsys)
    assert (code, err.strip()) == (2, line)


def test_the_defense_lands_in_config_json_and_the_study_rows(toy_defense, monkeypatch, tmp_path, one_thread):
    monkeypatch.setitem(DATASETS, "toy", DatasetSpec(load_toy, "72 random 8x8 images, 3 classes"))
    monkeypatch.setitem(ARCHS, "toy", ArchSpec(build_toy, lambda layers: layers == 1, (1,), default_layers=1))
    runs, results = tmp_path / "runs", tmp_path / "results"
    train.main(["--dataset", "toy", "--arch", "toy", "--methods", "dense", "--defenses", "none", "sqlogit",
                "--sqlogit-weight", "0.5", "--epochs", "1", "--batch-size", "16", "--num-shadows", "1",
                "--sens-draws", "2", "--attacks", "loss", "--device", "cpu", "--runs-dir", str(runs),
                "--results-dir", str(results), "--summary-dir", str(tmp_path)])

    stored = json.loads((paths.experiment_dir(runs, "dense", 0.0, "toy", "sqlogit") / paths.CONFIG).read_text())
    assert (stored["defense"], stored["sqlogit_weight"], stored["ppb_weight"]) == ("sqlogit", 0.5, None)
    plain = json.loads((paths.experiment_dir(runs, "dense", 0.0, "toy") / paths.CONFIG).read_text())
    assert (plain["defense"], plain["sqlogit_weight"]) == ("none", None)  # the study's flag reaches its defense only

    training = pd.read_csv(results / "training_results.csv")
    assert sorted(training.groupby("experiment").size().items()) == [("dense", 2), ("dense+sqlogit", 2)]  # + shadow
    attacks = pd.read_csv(results / "comprehensive_mia_results.csv").set_index("experiment")
    assert sorted(attacks.index) == ["dense", "dense+sqlogit"] and attacks.loc["dense+sqlogit", "defense"] == "sqlogit"
    assert "dense+sqlogit" in (results / paths.REPORT).read_text()


# -- the dataset ------------------------------------------------------------------------------------------

def test_a_dataset_spec_is_read_by_help_checks_and_defaults(toy_datasets, capsys):
    text = _help(run_experiment.main, capsys)
    assert "| toyvec | toyfile (digits, tabular, toyvec: embedded, offline; npz, toyfile: --data-path;" in text
    assert "(for --dataset npz, toyfile)" in text  # --data-path's help
    assert run_experiment.parse_config(["--dataset", "toyvec", "--arch", "mlp"]).mia_queries == 1  # feature vectors
    assert run_experiment.parse_config(["--dataset", "toyfile", "--data-path", "x"]).mia_queries == 2  # images
    code, _, err = run_main(run_experiment.main, ["--dataset", "toyfile"], capsys)
    assert (code, err.strip()) == (2, "error: --dataset toyfile needs --data-path FILE.toy")
    code, _, err = run_main(run_experiment.main, ["--dataset", "toyvec", "--mia-queries", "2"], capsys)
    assert code == 2 and "--dataset toyvec holds feature vectors" in err


def test_a_dataset_spec_trains(toy_datasets, tmp_path, one_thread):
    run_experiment.main(["--dataset", "toyvec", "--arch", "mlp", "--epochs", "1", "--batch-size", "8",
                         "--sens-draws", "2", "--device", "cpu", "--runs-dir", str(tmp_path)])
    exp = paths.experiment_dir(tmp_path, "dense", 0.0, "toyvec")
    assert (paths.model_dir(exp, 0) / paths.COMPLETE).exists()
    assert json.loads((exp / paths.CONFIG).read_text())["mia_queries"] == 1


def test_config_json_keeps_one_flat_key_per_defense_parameter_in_registry_order(toy_defense):
    from configs.config import ExperimentConfig

    cfg = ExperimentConfig(dataset="digits", epochs=4, defense="sqlogit", sqlogit_weight=3.0).resolved()
    d = cfg.to_dict()
    keys = list(d)
    assert keys[keys.index("defense"):keys.index("defense") + 9] == [
        "defense", "ppb_weight", "relaxloss_alpha", "relaxloss_upper", "label_smoothing_eps", "dp_noise", "dp_clip",
        "dp_delta", "sqlogit_weight"]
    assert "defense_params" not in d and d["sqlogit_weight"] == 3.0 and d["ppb_weight"] is None
    assert ExperimentConfig.from_dict(d) == cfg and ExperimentConfig.from_json(cfg.to_json()).recipe() == cfg.recipe()
    assert cfg == ExperimentConfig(dataset="digits", epochs=4, defense="sqlogit",
                                   defense_params={"sqlogit_weight": 3.0, "ppb_weight": None}).resolved()
