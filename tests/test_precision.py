"""The training forward's precision (training/precision.py): bf16 autocast on a CPU with native bf16 (AMX or
AVX512-BF16), fp32 on other CPUs and with --no-amp, never an autocast of a float64 model; a CPU evaluates in
fp32 whatever it trains in; one line says what ran."""
import platform

import numpy as np
import pytest
import torch

from configs.config import ExperimentConfig
from data import load_dataset
from training import model_io, precision, trainer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend this CPU has the given flags (cpu_bf16 asks once per process: its cache is cleared around)."""
    def set_flags(*flags):
        monkeypatch.setattr(precision, "_cpu_flags", lambda: set(flags))
        precision.cpu_bf16.cache_clear()
    monkeypatch.setattr(precision, "_SAID", set())
    yield set_flags
    precision.cpu_bf16.cache_clear()


def test_cpu_precision_follows_native_bf16(cpu_flags, capsys):
    cpu, cfg = torch.device("cpu"), ExperimentConfig()
    cpu_flags("avx2", "avx512f")
    assert precision.cpu_bf16() is None and precision.say_precision(cfg, cpu) == "fp32"
    assert capsys.readouterr().out.strip() == \
        "precision: fp32 (this CPU has no native bf16, neither AMX nor AVX512-BF16: --amp changes nothing here)"
    precision._SAID.clear()
    cpu_flags("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
    assert precision.cpu_bf16() == "AMX" and precision.say_precision(cfg, cpu) == "bf16"
    assert precision.say_precision(cfg, cpu) == "bf16"  # said once per process, not per model
    assert capsys.readouterr().out.strip() == "precision: bf16 autocast (this CPU computes bf16 natively: AMX; --no-amp: fp32)"
    cpu_flags("avx512_bf16")
    assert precision.cpu_bf16() == "AVX512-BF16"
    assert precision.precision(ExperimentConfig(amp=False), cpu) == "fp32"
    assert precision.precision(cfg, cpu, torch.float64) == "fp64"  # the reference tests' models: never autocast


@pytest.mark.skipif(platform.system() != "Linux", reason="/proc/cpuinfo")
def test_cpu_flags_from_torch_agree_with_proc_cpuinfo(monkeypatch):
    """torch's query and the /proc/cpuinfo fallback name the same bf16 flags on this machine."""
    with_torch = precision._cpu_flags()
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    from_proc = precision._cpu_flags()
    assert "avx2" in from_proc or "sse2" in from_proc  # the fallback read the flags line
    assert {f for f in precision._CPU_BF16 if f in with_torch} == {f for f in precision._CPU_BF16 if f in from_proc}


def _trainer(tmp_path, amp, dtype=None):
    cfg = ExperimentConfig(dataset="digits", arch="resnet", layers=20, epochs=1, batch_size=16, pool_size=64,
                           runs_dir=str(tmp_path), device="cpu", amp=amp).resolved()
    ds = load_dataset(cfg)
    return trainer.Trainer(cfg, ds, np.ones(len(ds.y_train), bool), dtype=dtype)


def test_bf16_autocasts_the_training_forward_only(cpu_flags, tmp_path):
    """With native bf16 (pretended: bf16 autocast runs on any CPU, emulated or not) the training forward's
    outputs are bf16 and the weights stay fp32; a float64 model is never autocast; evaluation on a CPU is
    the fp32 evaluation bit for bit."""
    cpu_flags("avx512_bf16")
    tr = _trainer(tmp_path, amp=True)
    assert tr.precision == "bf16"
    xb, yb = next(trainer.pack_batches(tr.seats, tr.batch, tr.iters))
    out, losses = tr._forward_backward(xb, yb)
    assert out.dtype == torch.bfloat16 and torch.isfinite(losses).all()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in tr.model.parameters())
    fp32 = _trainer(tmp_path, amp=False)
    assert fp32.precision == "fp32"
    assert model_io.evaluate(tr.model, tr.val, tr.cfg, tr.device) == model_io.evaluate(tr.model, tr.val, fp32.cfg, tr.device)
    f64 = _trainer(tmp_path, amp=True, dtype=torch.float64)
    assert f64.precision == "fp64"
    out, _ = f64._forward_backward(*next(trainer.pack_batches(f64.seats, f64.batch, f64.iters)))
    assert out.dtype == torch.float64
