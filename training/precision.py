"""The training forward's precision and the hardware settings of a run: one policy for the loop
(training/trainer.py) and for evaluating a model (training/model_io.py).

The training forward autocasts where the hardware computes the narrower type natively: bf16 on CUDA from
compute capability 8.0 and on CPUs with AMX or AVX512-BF16; fp16 with a GradScaler on older GPUs, where bf16
would be emulated, slowly; fp32 on other CPUs (BatchNorm stays fp32 under autocast); never for a float64
model. CUDA adds cudnn.benchmark (shapes are fixed). The answer is recorded in each model's summary.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch
from tqdm import tqdm

from configs.config import ExperimentConfig
from utils.device import keep_freed_cpu_memory


def precision(cfg: ExperimentConfig, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """What the training forward runs in: 'bf16' (autocast: CUDA from compute capability 8.0, or a CPU that
    computes bf16 natively, cpu_bf16()), 'fp16' (autocast + GradScaler, CUDA before 8.0: bf16 is emulated
    there, correct but slow), 'fp32' (a CPU without native bf16, where autocast would only add casts, or
    --no-amp) or 'fp64' (a float64 model, the reference tests: never autocast). Recorded in each summary."""
    if dtype == torch.float64:
        return "fp64"
    if not cfg.amp:
        return "fp32"
    if device.type == "cuda":
        return "bf16" if _capability(device) >= (8, 0) else "fp16"
    return "bf16" if device.type == "cpu" and cpu_bf16() else "fp32"


@functools.lru_cache(maxsize=None)
def _capability(device: torch.device) -> tuple[int, int]:
    return torch.cuda.get_device_capability(device)  # asked once per device, not at every step


# A CPU's native bf16 instructions, by the flag that names them (the first one present is stated).
_CPU_BF16 = {"amx_bf16": "AMX", "avx512_bf16": "AVX512-BF16"}


@functools.lru_cache(maxsize=None)
def cpu_bf16() -> str | None:
    """This CPU's native bf16 arithmetic, asked once: 'AMX' (Intel Xeon from Sapphire Rapids), 'AVX512-BF16'
    (Intel Cooper Lake, AMD Zen 4 and later) or None (bf16 would be emulated, slower than fp32)."""
    flags = _cpu_flags()
    return next((name for flag, name in _CPU_BF16.items() if flag in flags), None)


def _cpu_flags() -> set[str]:
    """torch's own query (torch.cpu.get_capabilities, from its cpuinfo library: every OS) where this torch
    has it, else the flags of Linux's /proc/cpuinfo; none known: no flags."""
    query = getattr(torch.cpu, "get_capabilities", None)
    if query is not None:
        return {flag for flag, present in query().items() if present is True}
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
        return set(line.split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


_SAID = set()


def say_precision(cfg: ExperimentConfig, device: torch.device, dtype: torch.dtype = torch.float32) -> str:
    """precision(), with one line the first time --amp meets a device whose answer depends on its hardware:
    a CPU (bf16 autocast, or fp32 and why) and a GPU without native bf16 (fp16)."""
    p = precision(cfg, device, dtype)
    line = _precision_line(p, device) if cfg.amp and p != "fp64" else None
    if line and device not in _SAID:
        _SAID.add(device)
        tqdm.write(line)
    return p


def _precision_line(p: str, device: torch.device) -> str | None:
    if device.type == "cpu":
        if p == "bf16":
            return f"precision: bf16 autocast (this CPU computes bf16 natively: {cpu_bf16()}; --no-amp: fp32)"
        return "precision: fp32 (this CPU has no native bf16, neither AMX nor AVX512-BF16: --amp changes nothing here)"
    if p == "fp16":
        major, minor = _capability(device)
        return (f"note: {torch.cuda.get_device_name(device)} (compute capability {major}.{minor}) has no native "
                f"bf16: training with fp16 autocast and a GradScaler instead (--no-amp: fp32)")
    return None


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(cfg: ExperimentConfig, device: torch.device, dtype: torch.dtype = torch.float32):
    """The training forward's autocast where precision() says bf16 or fp16 (BatchNorm stays fp32 under it);
    none in fp32 and fp64."""
    p = precision(cfg, device, dtype)
    if p not in AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[p])


def grad_scaler(cfg: ExperimentConfig, device: torch.device):
    """A GradScaler where the forward runs in fp16 (its small range underflows gradients), else a no-op one."""
    return torch.amp.GradScaler("cuda", enabled=precision(cfg, device) == "fp16")


def configure_backends(device: torch.device) -> None:
    """cudnn.benchmark on CUDA: every training step has the same shapes, so the autotuned algorithm
    is chosen once. (The signal pass runs in fp32 with TF32 off: training/signals.py.) On CPU, freed
    blocks stay in the heap for the next step (utils.device.keep_freed_cpu_memory: no page faults)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        keep_freed_cpu_memory()
