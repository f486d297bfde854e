"""Model registry: arch name -> (builder, depth check, description of valid depths)."""
from __future__ import annotations

import torch.nn as nn

from models import resnet, wideresnet
from utils.errors import UsageError

MODELS = {
    "resnet": (resnet.build, resnet.valid, "18, 20, 32, 44, 56, 110"),
    "wideresnet": (wideresnet.build, wideresnet.valid, "(depth - 4) % 6 == 0, e.g. 16, 22, 28, 40"),
}


def check_arch(arch: str, layers: int) -> None:
    if arch not in MODELS:
        raise UsageError(f"unknown arch '{arch}'; valid: {', '.join(MODELS)}")
    if not MODELS[arch][1](layers):
        raise UsageError(f"--layers {layers} is not a valid {arch} depth; valid: {MODELS[arch][2]}")


def build_model(arch: str, layers: int, width_factor: int, num_classes: int, in_channels: int) -> nn.Module:
    check_arch(arch, layers)
    return MODELS[arch][0](layers, width_factor, num_classes, in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
