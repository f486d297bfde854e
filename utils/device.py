"""The one device resolution shared by training (models) and mia/ (attack models)."""
from __future__ import annotations

import torch

from utils.errors import UsageError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; a CUDA device asked for where there is none is one line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available here; use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device '{name}'; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise UsageError(f"--device {name}: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1}); "
                         f"CUDA_VISIBLE_DEVICES renumbers them from 0")
    return device
