"""Model registry: arch name -> ArchSpec (builder, depth rule, default depth).

Each arch module owns its builder, its depth rule (`valid`) and the human-readable list of valid
depths (`VALID_LAYERS`), so adding an arch is one module plus one line in ARCHS; --arch, --layers'
default and the messages naming valid choices all read ARCHS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch.nn as nn

from models import densenet, mlp, mobilenetv2, resnet, vgg, wideresnet
from utils.errors import UsageError


@dataclass(frozen=True)
class ArchSpec:
    build: Callable[[int, int, int, int], nn.Module]  # (layers, width_factor, num_classes, in_channels)
    valid: Callable[[int], bool]                      # is `layers` a depth this arch builds
    valid_layers: Union[tuple, str]                   # those depths, for messages and --help
    default_layers: int                               # --layers when not given
    # --width-factor when not given: the published width where the arch has a multiplier (WRN-28-2, MobileNetV2
    # x1, the MLP x1); 2 for the archs that ignore it, the value their configs have always recorded
    default_width: int = 2


ARCHS: dict[str, ArchSpec] = {
    "resnet": ArchSpec(resnet.build, resnet.valid, resnet.VALID_LAYERS, default_layers=20),
    "wideresnet": ArchSpec(wideresnet.build, wideresnet.valid, wideresnet.VALID_LAYERS, default_layers=28),
    "vgg": ArchSpec(vgg.build, vgg.valid, vgg.VALID_LAYERS, default_layers=16),
    "densenet": ArchSpec(densenet.build, densenet.valid, densenet.VALID_LAYERS, default_layers=121),
    "mobilenetv2": ArchSpec(mobilenetv2.build, mobilenetv2.valid, mobilenetv2.VALID_LAYERS, default_layers=53,
                            default_width=1),
    "mlp": ArchSpec(mlp.build, mlp.valid, mlp.VALID_LAYERS, default_layers=2, default_width=1),
}


def _describe(valid) -> str:
    return valid if isinstance(valid, str) else ", ".join(map(str, valid))


def check_arch(arch: str, layers: int, width_factor: Optional[int] = None) -> None:
    """Raise a one-line UsageError naming the valid choices; width_factor is checked when given."""
    if arch not in ARCHS:
        raise UsageError(f"unknown arch '{arch}'; valid: {', '.join(ARCHS)}")
    if not ARCHS[arch].valid(layers):
        raise UsageError(f"--layers {layers} is not a valid {arch} depth; valid: {_describe(ARCHS[arch].valid_layers)}")
    if width_factor is not None and width_factor < 1:
        raise UsageError(f"--width-factor must be a positive integer, got {width_factor}")


def build_model(arch: str, layers: int, width_factor: int, num_classes: int, in_channels: int) -> nn.Module:
    check_arch(arch, layers, width_factor)
    return ARCHS[arch].build(layers, width_factor, num_classes, in_channels)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
