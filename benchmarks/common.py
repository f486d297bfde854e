"""Shared benchmark helpers: machine description and data (real CIFAR-10 when present)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import torch

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpeg_q75.npz"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.platform()} | {cpu} | {os.cpu_count()} cores, torch threads {torch.get_num_threads()} | "
            f"{gpu} | torch {torch.__version__} | python {platform.python_version()}")


def sync(device) -> None:
    """Wait for `device`'s queued work (a no-op on CPU). With the device named: a bare
    torch.cuda.synchronize() waits on the current device, cuda:0, even when timing cuda:1."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cifar_like(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """n uint8 32x32x3 images + labels: real CIFAR-10 (developers' shared copy) when present, else random."""
    if SHARED_CIFAR.exists():
        with np.load(SHARED_CIFAR) as z:
            return z["x_train"][:n], z["y_train"][:n].astype(np.int64), f"CIFAR-10 ({SHARED_CIFAR.name})"
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64),
            "random 32x32x3 uint8")
