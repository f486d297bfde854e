"""Model registry: arch name -> builder(layers, width_factor, num_classes, in_channels).

Each arch module owns its depth rule (`valid`) and the human-readable list of valid depths
(`VALID_LAYERS`), so adding an arch is one module plus one line here.
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from models import resnet, wideresnet
from utils.errors import UsageError

_ARCHS = {"resnet": resnet, "wideresnet": wideresnet}
MODELS = {name: mod.build for name, mod in _ARCHS.items()}
VALID_LAYERS = {name: mod.VALID_LAYERS for name, mod in _ARCHS.items()}


def _describe(valid) -> str:
    return valid if isinstance(valid, str) else ", ".join(map(str, valid))


def check_arch(arch: str, layers: int, width_factor: Optional[int] = None) -> None:
    """Raise a one-line UsageError naming the valid choices; width_factor is checked when given."""
    if arch not in _ARCHS:
        raise UsageError(f"unknown arch '{arch}'; valid: {', '.join(_ARCHS)}")
    if not _ARCHS[arch].valid(layers):
        raise UsageError(f"--layers {layers} is not a valid {arch} depth; valid: {_describe(VALID_LAYERS[arch])}")
    if width_factor is not None and width_factor < 1:
        raise UsageError(f"--width-factor must be a positive integer, got {width_factor}")


def build_model(arch: str, layers: int, width_factor: int, num_classes: int, in_channels: int) -> nn.Module:
    check_arch(arch, layers, width_factor)
    return MODELS[arch](layers, width_factor, num_classes, in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
