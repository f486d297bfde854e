import json

import pytest

from configs.config import ExperimentConfig, add_config_args, config_from_args
from artifacts import paths
from data import DATASETS
from pruning import PRUNING_METHODS

FROZEN = ", ".join(m for m, spec in PRUNING_METHODS.items() if spec.uses_freeze)  # dpf: the methods with a freeze
from utils.errors import UsageError


def _parse(argv):
    import argparse

    p = argparse.ArgumentParser()
    add_config_args(p)
    return config_from_args(p.parse_args(argv))


def test_cli_defaults_are_the_dataclass_defaults():
    assert _parse([]) == ExperimentConfig()


def test_recipe_defaults_from_reference():
    c = ExperimentConfig().resolved()
    assert (c.lr, c.momentum, c.weight_decay, c.batch_size, c.epochs) == (0.1, 0.9, 5e-4, 128, 200)
    assert c.milestones == [100, 150] and c.gamma == 0.1


def test_milestones_scale_with_epochs_and_pruning_epochs_default():
    c = _parse(["--epochs", "40", "--prune", "--prune-method", "dpf", "--sparsity", "0.9"]).resolved()
    assert c.milestones == [20, 30]
    assert (c.target_epoch, c.freeze_epoch) == (15, 36)
    c = _parse(["--prune", "--prune-method", "dpf", "--sparsity", "0.9"]).resolved()
    assert (c.target_epoch, c.freeze_epoch) == (75, 180)
    assert c.name == "dpf_0.9" and c.method == "dpf"
    c = _parse(["--epochs", "40", "--prune", "--prune-method", "gmp", "--sparsity", "0.9"]).resolved()
    assert (c.target_epoch, c.freeze_epoch) == (15, None)  # gradual, no freeze
    c = _parse(["--epochs", "40", "--prune", "--prune-method", "static", "--sparsity", "0.9"]).resolved()
    assert (c.target_epoch, c.freeze_epoch) == (0, None)  # one-shot at initialisation
    explicit = _parse(["--epochs", "40", "--prune", "--prune-method", "static", "--sparsity", "0.9", "--target-epoch", "0"])
    assert explicit.resolved() == c  # --target-epoch 0 means "at initialisation": what static does anyway


def test_json_round_trip():
    c = _parse(["--dataset", "digits", "--milestones", "3", "7", "--no-amp", "--nesterov"]).resolved()
    back = ExperimentConfig.from_json(c.to_json())
    assert back == c
    assert json.loads(c.to_json())["method"] == "dense"


@pytest.mark.parametrize("argv, needle", [
    (["--arch", "vit"], "unknown arch 'vit'"),
    (["--layers", "21"], "21"),
    (["--dataset", "mnist"], f"unknown dataset 'mnist'; valid: {', '.join(DATASETS)}"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--lr", "-0.1"], "--lr must be positive"),
    (["--dataset", "npz"], "--data-path"),
    (["--prune"], "--prune and --prune-method go together"),
    (["--prune-method", "dpf"], "--prune and --prune-method go together"),
    (["--prune", "--prune-method", "magic", "--sparsity", "0.5"], "valid: "),
    (["--prune", "--prune-method", "static", "--sparsity", "1.0"], "--sparsity must be in (0, 1)"),
    (["--prune", "--prune-method", "static", "--sparsity", "0"], "--sparsity must be in (0, 1)"),
    (["--prune", "--prune-method", "dpf", "--sparsity", "0.9", "--epochs", "10", "--target-epoch", "11"], "--target-epoch"),
    (["--prune", "--prune-method", "dpf", "--sparsity", "0.9", "--epochs", "10", "--target-epoch", "5", "--freeze-epoch", "4"], "--freeze-epoch"),
    (["--prune", "--prune-method", "static", "--sparsity", "0.9", "--target-epoch", "5"],
     "--target-epoch does not apply to --prune-method static (pruned once at initialisation); use --prune-method gmp"),
    (["--prune", "--prune-method", "static", "--sparsity", "0.9", "--freeze-epoch", "5"],
     f"--freeze-epoch applies to --prune-method {FROZEN} only, not static"),
    (["--prune", "--prune-method", "gmp", "--sparsity", "0.9", "--freeze-epoch", "5"],
     f"--freeze-epoch applies to --prune-method {FROZEN} only, not gmp"),
    (["--num-shadows", "-1"], "--num-shadows"),
    (["--num-shadows", "3", "--model-index", "4"], "--model-index must be in 0..3"),
])
def test_bad_input_is_one_clear_line(argv, needle):
    with pytest.raises(UsageError) as e:
        _parse(argv).resolved()
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_paths_layout(tmp_path):
    assert paths.experiment_dir("runs", "dense", 0.0, "cifar10").as_posix() == "runs/dense/cifar10"
    assert paths.experiment_dir("runs", "dpf", 0.9, "cifar10").as_posix() == "runs/dpf/sparsity_0.9/cifar10"
    assert paths.model_dir("e", 0).as_posix() == "e"
    assert paths.model_dir("e", 3).as_posix() == "e/shadows/3"
