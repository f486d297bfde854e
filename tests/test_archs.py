"""The architectures beyond ResNet (models/: VGG, DenseNet, MobileNetV2, MLP) through the real training path:
one step under every pruning method at exactly its sparsity, a checkpoint that rebuilds the model from the
file alone, the prunable set each one exposes (pruning/masks.py) and how a pack of MLPs computes
(training/packing.py). Smallest valid depth and width, batch 4, 8x8 images: seconds on a CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from configs.config import ExperimentConfig
from data.datasets import from_arrays
from models import ARCHS, build_model
from pruning import PRUNING_METHODS, measure_sparsity, prunable_parameters
from training.packing import hidden_linear, pack_mode, pack_models
from training.model_io import load_model
from training.trainer import Trainer, train_models
from utils.errors import UsageError

pytestmark = pytest.mark.usefixtures("one_thread")

# the smallest valid depth of each arch, at its default width
SMALLEST = {"vgg": 11, "densenet": 121, "mobilenetv2": 53, "mlp": 1}
# the study's own methods (every method of the registry that trains from scratch: fine-tuning ones start
# from a trained dense model and are tested with their own code)
METHODS = ("static", "dpf", "gmp")


def _images(n: int = 4):
    """n random 8x8 colour images of 2 classes (pool), and 6 test images."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n + 6, 8, 8, 3), dtype=np.uint8)
    y = np.arange(n + 6) % 2
    return from_arrays("t", x[:n], y[:n], x[n:], y[n:])


def _features(n: int = 4, f: int = 12):
    rng = np.random.default_rng(0)
    x = (rng.random((n + 6, f)) < 0.3).astype(np.uint8)
    y = np.arange(n + 6) % 3
    return from_arrays("t", x[:n], y[:n], x[n:], y[n:])


def _cfg(arch: str, method: str | None, **kw) -> ExperimentConfig:
    prune = dict(method=method, sparsity=0.7, target_epoch=0) if method else {}
    return ExperimentConfig(dataset="digits", arch=arch, layers=SMALLEST[arch], epochs=1, batch_size=4,
                            device="cpu", amp=False, sens_draws=1, **prune, **kw).resolved()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", sorted(SMALLEST))
def test_one_step_under_every_method_at_exact_sparsity_and_reload(arch, method, tmp_path):
    """One step (4 images, batch 4) with the schedule at its target from step 0: the saved model has exactly
    round(0.7 x prunable) zeros in its prunable set, the masks of its checkpoint say the same, and
    load_model rebuilds it from the file alone (the same tensors)."""
    ds = _features() if arch == "mlp" else _images()
    cfg = _cfg(arch, method)
    (summary, model), = train_models(cfg, ds, np.ones(len(ds.y_train), bool), [0], [tmp_path])
    n = sum(p.numel() for _, p in prunable_parameters(model))
    assert summary["measured_sparsity"] == round(0.7 * n) / n
    loaded, loaded_cfg = load_model(tmp_path / "best_model.pth")
    assert (loaded_cfg.arch, loaded_cfg.layers, loaded_cfg.width_factor) == (arch, SMALLEST[arch], ARCHS[arch].default_width)
    ck = torch.load(tmp_path / "best_model.pth", weights_only=True)
    assert sorted(ck["masks"]) == sorted(name for name, _ in prunable_parameters(loaded))
    assert sum(int((~m).sum()) for m in ck["masks"].values()) == round(0.7 * n)
    saved = model.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.state_dict().items()) and loaded.state_dict().keys() == saved.keys()


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_the_prunable_set_is_every_conv_and_every_linear_but_the_classifier(arch):
    """The rule of pruning/masks.py, against an independent count: every Conv2d (depthwise included) and
    every Linear before the classifier; the classifier (the arch's `fc`), BatchNorm and biases dense. The
    state-dict reading (measure_sparsity of a checkpoint) names the same tensors."""
    model = build_model(arch, ARCHS[arch].default_layers, ARCHS[arch].default_width, 10, 3)
    names = [n for n, _ in prunable_parameters(model)]
    expected = [f"{n}.weight" for n, m in model.named_modules()
                if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and m is not model.fc)]
    assert names == expected and "fc.weight" not in names
    assert list(measure_sparsity(model.state_dict())["layer_sparsity"]) == names
    if arch == "mobilenetv2":
        assert any(m.groups > 1 for m in model.modules() if isinstance(m, nn.Conv2d))
    if arch == "mlp":
        assert names == ["hidden.0.weight", "hidden.3.weight"]


def test_mlp_packs_model_by_model(tmp_path):
    """A hidden Linear cannot be one grouped network's layer (training/packing.py hidden_linear): auto packs
    MLPs sequentially, an explicit grouped pack is refused in one line naming the layer; CNNs are unchanged."""
    mlps = [build_model("mlp", 2, 1, 3, 12) for _ in range(2)]
    assert hidden_linear(mlps[0]) == "hidden.0" and hidden_linear(build_model("vgg", 11, 1, 3, 3)) is None
    cfg = _cfg("mlp", None)
    assert pack_mode(cfg, torch.device("cpu"), (12, 1, 1), mlps[0]) == "sequential"
    assert pack_mode(cfg, torch.device("cpu"), (12, 1, 1)) == "grouped"  # what feature vectors alone would say
    with pytest.raises(UsageError, match="hidden Linear layer 'hidden.0'.*--pack-mode sequential") as e:
        pack_models(mlps)
    assert "\n" not in str(e.value)
    ds = _features()
    keep = np.ones((2, len(ds.y_train)), bool)
    assert Trainer(cfg, ds, keep, [0, 1]).mode == "sequential"


def test_static_pruning_at_init_leaves_every_mlp_layer_alive():
    """Global magnitude at 0.9 on a freshly initialised MLP (the embedded tabular set's 100 features): every
    hidden layer keeps weights. With PyTorch's default Linear init the second layer was removed whole
    (models/mlp.py) and static training stayed at chance."""
    from pruning import global_magnitude_masks

    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model("mlp", 2, 1, 20, 100)
        masks = global_magnitude_masks(dict(prunable_parameters(model)), 0.9)
        kept = {name: float(m.float().mean()) for name, m in masks.items()}
        assert min(kept.values()) > 0.02, kept


@pytest.mark.parametrize("arch, width", [("resnet", 2), ("wideresnet", 2), ("mobilenetv2", 1), ("mlp", 1), ("vgg", 2)])
def test_width_factor_defaults_to_the_archs_and_the_command_repeats_only_a_chosen_one(arch, width):
    """--width-factor unset resolves to ARCHS[arch].default_width (2 where it is ignored: what resnet configs
    have always recorded, so their recipes still match); command_line() leaves the derived value out and
    keeps a chosen one, which rebuilds the same config."""
    import shlex

    from configs.config import command_line
    from run_experiment import parse_config

    c = ExperimentConfig(arch=arch).resolved()
    assert c.width_factor == width and "--width-factor" not in command_line(c)
    wide = ExperimentConfig(arch=arch, width_factor=3).resolved()
    assert "--width-factor 3" in command_line(wide)
    assert parse_config(shlex.split(command_line(wide))[2:]).recipe() == wide.recipe()
