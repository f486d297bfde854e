"""One method field: dense is an entry of the method registry, `ExperimentConfig.method` is the one field that
names a configuration's method, the two-flag spelling (--prune --prune-method M) is the same as --method M, and
a run directory recorded with the two fields (prune, prune_method) still loads and is reused."""
import argparse
import dataclasses
import json
import os

import pytest

from artifacts import paths
from artifacts.rundir import current_config, load_experiment
from configs.config import ExperimentConfig, add_config_args, config_from_args, recipe_diff
from pruning import PRUNING_METHODS
from utils.errors import UsageError


def _parse(argv):
    p = argparse.ArgumentParser()
    add_config_args(p)
    return config_from_args(p.parse_args(argv))


def _old_spelling(d: dict) -> dict:
    """A config dict as recorded before the method field: prune and prune_method beside the derived method."""
    method = d["method"]
    return {**d, "prune": method != "dense", "prune_method": None if method == "dense" else method}


# -- the registry --------------------------------------------------------------------------------------

def test_dense_is_a_registry_entry_that_prunes_nothing():
    assert list(PRUNING_METHODS)[0] == "dense" and not PRUNING_METHODS["dense"].prunes
    c = ExperimentConfig(dataset="digits", sparsity=0.5).resolved()  # a dense run ignores --sparsity, as before
    assert (c.method, c.sparsity, c.name, c.target_epoch) == ("dense", 0.0, "dense", None)
    assert c.fit_config() is c  # no fine-tuning or rounds
    p = argparse.ArgumentParser()
    add_config_args(p)
    method_help = p.format_help().split("\n  --method METHOD")[1].split("\n  --")[0]
    assert "dense | static | dpf" in " ".join(method_help.split())


def test_a_dense_trainer_has_no_pruner(tiny_cfg):
    import numpy as np

    from data import load_dataset
    from training.trainer import Trainer

    cfg = dataclasses.replace(tiny_cfg, arch="mlp", layers=None, pool_size=40, test_size=20, epochs=1).resolved()
    ds = load_dataset(cfg)
    tr = Trainer(cfg, ds, np.ones(len(ds.y_train), bool), 0)
    assert tr.seats[0].pruner is None


# -- the command line ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method, extra", [("dense", []), ("static", ["--sparsity", "0.5"]),
                                           ("dpf", ["--sparsity", "0.9", "--epochs", "10"])])
def test_the_two_spellings_give_the_same_config(method, extra):
    direct = _parse(["--method", method, *extra])
    assert direct.method == method
    if method != "dense":
        assert _parse(["--prune", "--prune-method", method, *extra]) == direct
        assert _parse(["--method", method, "--prune", "--prune-method", method, *extra]) == direct
    assert _parse([*extra]).method == "dense" and _parse(["--no-prune", *extra]).method == "dense"
    assert direct.resolved() == ExperimentConfig(method=method, **{"sparsity": float(extra[1])} if extra else {},
                                                 **({"epochs": 10} if method == "dpf" else {})).resolved()


@pytest.mark.parametrize("argv, needle", [
    (["--prune"], "--prune and --prune-method go together (e.g. --prune --prune-method dpf --sparsity 0.9)"),
    (["--prune-method", "dpf"], "--prune and --prune-method go together (e.g. --prune --prune-method dpf --sparsity 0.9)"),
    (["--no-prune", "--prune-method", "dpf"], "--prune and --prune-method go together"),
    (["--method", "static", "--prune", "--prune-method", "dpf"], "--method static and --prune-method dpf disagree"),
    (["--method", "magic"], f"unknown --prune-method 'magic'; valid: {', '.join(PRUNING_METHODS)}"),
    (["--method", "static", "--sparsity", "1.0"], "--sparsity must be in (0, 1), got 1.0"),
    (["--snip-batches", "2"], "--snip-batches applies to --prune-method snip only"),
])
def test_bad_spellings_are_one_line(argv, needle):
    with pytest.raises(UsageError) as e:
        _parse(argv).resolved()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_the_recorded_command_uses_the_known_spelling():
    from configs.config import command_line

    cmd = command_line(ExperimentConfig(dataset="digits", method="static", sparsity=0.5).resolved())
    assert "--prune --prune-method static --sparsity 0.5" in cmd and "--method" not in cmd
    assert "prune" not in command_line(ExperimentConfig(dataset="digits").resolved())


# -- run directories recorded with prune / prune_method ----------------------------------------------

@pytest.mark.parametrize("method, kw", [("dense", {}), ("static", dict(sparsity=0.5)),
                                        ("dpf", dict(sparsity=0.9, epochs=10))])
def test_an_old_config_dict_gives_the_same_config_as_the_new_spelling(method, kw):
    new = ExperimentConfig(dataset="digits", method=method, **kw).resolved()
    d = new.to_dict()
    assert "prune" not in d and "prune_method" not in d and d["method"] == method
    old = _old_spelling(d)
    assert current_config(old) == d  # known answer: the converter gives today's record
    assert ExperimentConfig.from_dict(old) == new
    assert ExperimentConfig.from_dict(old).resolved() == new
    assert recipe_diff({k: v for k, v in old.items() if k in new.recipe() or k in ("prune", "prune_method")}, new) == []
    # a record without the derived method (before it was recorded) reads the same
    assert ExperimentConfig.from_dict({k: v for k, v in old.items() if k != "method"}) == new


@pytest.mark.parametrize("d, needle", [
    ({"dataset": "digits"}, "a recorded config without a method"),
    ({"prune": True, "prune_method": "dpf", "method": "static"}, "method fields disagree"),
    ({"prune": True, "prune_method": None, "method": "dense"}, "method fields disagree"),
])
def test_a_config_the_converter_cannot_read_is_refused_with_one_line(d, needle):
    with pytest.raises(UsageError) as e:
        ExperimentConfig.from_dict(d)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_an_old_run_directory_loads_and_is_reused_by_skip_existing(tiny_cfg, one_thread):
    """A finished static run whose config.json and checkpoint record prune / prune_method: the reader, the
    checkpoint loader and --skip-existing take it as today's configuration (nothing is trained again)."""
    from run_experiment import run
    from training.experiment import experiment_dir
    from training.model_io import load_model
    from utils.io import load_json, load_torch, save_json, save_torch

    cfg = dataclasses.replace(tiny_cfg, arch="mlp", layers=None, epochs=1, pool_size=40, test_size=20, mia_queries=1, sens_draws=1,
                              method="static", sparsity=0.5).resolved()
    run(cfg)
    exp = experiment_dir(cfg)
    save_json(_old_spelling(load_json(exp / paths.CONFIG)), exp / paths.CONFIG)
    stamp = (exp / paths.BEST_MODEL).stat().st_mtime_ns
    ck = load_torch(exp / paths.BEST_MODEL)
    save_torch({**ck, "config": _old_spelling(ck["config"])}, exp / paths.BEST_MODEL)
    os.utime(exp / paths.BEST_MODEL, ns=(stamp, stamp))  # as written then: not newer than its signals

    assert load_experiment(exp).config["prune_method"] == "static"  # the raw record, read as written
    assert load_model(exp / paths.BEST_MODEL)[1].recipe() == cfg.recipe()
    assert run(dataclasses.replace(cfg, skip_existing=True)) == []  # reused: nothing trained
    assert (exp / paths.BEST_MODEL).stat().st_mtime_ns == stamp
    assert json.loads((exp / paths.CONFIG).read_text())["method"] == "static"
