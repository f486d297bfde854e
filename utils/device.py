"""The one device resolution shared by training (models) and mia/ (attack models), and the CPU allocator setting
for training (keep_freed_cpu_memory)."""
from __future__ import annotations

import functools

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


# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache  # once per process: platform.libc_ver() reads the interpreter's binary
def keep_freed_cpu_memory(threshold: int = 1 << 30) -> bool:
    """Let glibc's malloc reuse freed blocks up to `threshold` bytes instead of returning them to the system.

    Why: a CPU training step frees and re-allocates the same large tensors (layer outputs, their
    gradients) every step. glibc serves a block above its mmap threshold (adaptive, but never above
    32 MiB) with freshly mapped pages that the kernel faults in and zeroes on first touch, and unmaps it
    when freed; so every step pays page faults for every tensor over 32 MiB. A ResNet-20 layer output at
    batch 128 is 8 MiB for one model but 34 MiB for a pack of 4 (docs/packing.md): measured 0.65x of one
    by one without this, 0.83x with it, and 4x less system time. Raising the mmap and trim thresholds
    keeps freed blocks in the heap for the next step; the price is that the process keeps its peak
    heap until it exits, which a training process reaches every step anyway.
    Process-wide and idempotent. Linux with glibc only (elsewhere nothing happens): returns whether it applied."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * threshold))
