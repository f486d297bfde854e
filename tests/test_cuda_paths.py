"""CUDA code paths checked where a CPU can show them (issue 14, "CUDA-path defects found by reading"):
device ordinals, precision before compute capability 8.0, the signal pass's batch and cache, launch
counts of the pruner's per-step hooks, and the benchmarks' synchronisation."""
import pytest
import torch
import torch.nn as nn

from configs.config import ExperimentConfig
from models import build_model
from pruning import build_pruner, global_magnitude_masks, measure_sparsity
from utils.errors import UsageError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine that reports one CUDA device (nothing runs on it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_resolve_device_checks_the_ordinal(one_gpu):
    from utils.device import resolve_device

    assert resolve_device("cuda:0") == torch.device("cuda:0") and resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(UsageError, match=r"--device cuda:1: this machine has 1 CUDA device\(s\) \(cuda:0..cuda:0\)"):
        resolve_device("cuda:1")


def test_a_ray_worker_trains_on_its_own_cuda(one_gpu):
    """Ray renumbers the worker's GPUs from 0: the driver's cuda:N is the worker's cuda."""
    from training.ray_executor import worker_device

    assert [worker_device(d) for d in ("cuda:1", "cuda:0", "cuda", "auto", "cpu")] == ["cuda"] * 4 + ["cpu"]


def test_no_bf16_before_compute_capability_8(monkeypatch, capsys):
    from training import precision

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100")
    cuda, cfg = torch.device("cuda"), ExperimentConfig()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 0))
    precision._capability.cache_clear()
    assert precision.precision(cfg, cuda) == "fp16"
    assert precision.say_precision(cfg, cuda) == "fp16"
    assert "compute capability 7.0) has no native bf16: training with fp16 autocast and a GradScaler" in capsys.readouterr().out
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    precision._capability.cache_clear()
    assert precision.precision(cfg, cuda) == "bf16"
    assert precision.precision(ExperimentConfig(amp=False), cuda) == "fp32"
    assert precision.precision(cfg, torch.device("cpu")) == ("bf16" if precision.cpu_bf16() else "fp32")  # tests/test_precision.py
    precision._capability.cache_clear()  # no fake capability left for later tests


def test_cudnn_benchmark_on_cuda_only():
    from training.precision import configure_backends

    old = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        configure_backends(torch.device("cpu"))
        assert not torch.backends.cudnn.benchmark
        configure_backends(torch.device("cuda"))
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = old


def test_the_signal_pass_turns_cudnn_benchmark_off_and_restores_it():
    from training.signals import fp32_pass

    old = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True  # as training leaves it on CUDA
        with fp32_pass(torch.device("cpu")):
            assert not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = old


def test_checkpoint_state_is_a_cpu_copy():
    from training.model_io import to_cpu

    state = {"w": torch.ones(3), "n": torch.tensor(2)}
    out = to_cpu(state)
    state["w"].zero_()
    assert out["w"].device.type == "cpu" and out["w"].sum() == 3  # a copy, not the training tensor


def test_signal_batch_is_sized_by_the_model_and_the_cache_is_freed(monkeypatch):
    from training import signals

    cuda = torch.device("cuda")
    assert signals._batch_size(torch.device("cpu")) == 64
    small = signals._batch_size(cuda, build_model("resnet", 20, 1, 10, 3), (3, 32, 32))
    wide = signals._batch_size(cuda, build_model("wideresnet", 28, 2, 10, 3), (3, 32, 32))
    wider = signals._batch_size(cuda, build_model("wideresnet", 28, 10, 10, 3), (3, 32, 32))
    assert 4096 >= small > wide > wider >= 64
    freed = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: freed.append(1))
    signals.free_device_cache("cpu")
    assert not freed
    signals.free_device_cache(cuda)
    assert freed == [1]


def test_global_threshold_by_sort_equals_kthvalue():
    """CUDA takes the threshold from a sort (kthvalue is slow there), CPU from kthvalue (fast there): the
    same threshold, so the same masks, exact count and index-order ties, whichever path runs."""
    from pruning.masks import kth_smallest, prune_lowest

    g = torch.Generator().manual_seed(0)
    w = [torch.randint(-20, 20, (500,), generator=g).float(), torch.randint(-20, 20, (3, 7), generator=g).float()]
    scores = [x.abs() for x in w]
    flat = torch.cat([x.flatten() for x in scores])
    for k in (1, 100, 260, 521):
        assert kth_smallest(flat, k, by_sort=True) == kth_smallest(flat, k, by_sort=False) == flat.sort().values[k - 1]
        a, b = prune_lowest(scores, k, by_sort=True), prune_lowest(scores, k, by_sort=False)
        assert all(torch.equal(x, y) for x, y in zip(a, b)) and sum(int((~x).sum()) for x in a) == k

    def refuse(*a, **kw):
        raise AssertionError("kthvalue called on the sort path")

    orig = torch.Tensor.kthvalue
    torch.Tensor.kthvalue = refuse
    try:
        masks = prune_lowest([torch.zeros(10, 10), torch.ones(5, 5), torch.tensor([0.5, 0.5, 0.5, 2.0])], 102, by_sort=True)
    finally:
        torch.Tensor.kthvalue = orig
    assert masks[2].tolist() == [False, False, True, True] and not masks[0].any() and masks[1].all()


def _top_level_ops(fn) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return [e.name for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]


@pytest.mark.parametrize("method", ["gmp", "dpf"])
def test_pruner_hooks_are_a_few_foreach_calls_not_one_per_conv(method):
    model = build_model("resnet", 20, 1, 10, 1)
    pruner = build_pruner(method, model, 0.5, 10, 1, None, 4)
    pruner.before_step(0)
    nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    n_convs = len(pruner.params)
    for hook in (pruner.after_backward, pruner.after_optimizer_step):
        ops = _top_level_ops(hook)
        assert ops and len(ops) <= 2 < n_convs and all(o.startswith("aten::_foreach_") for o in ops), ops


def test_measure_sparsity_copies_once():
    model = build_model("resnet", 20, 1, 10, 1)
    ops = _top_level_ops(lambda: measure_sparsity(model))
    assert not [o for o in ops if o in ("aten::to", "aten::_to_copy", "aten::item", "aten::_local_scalar_dense")], ops


def test_models_pool_with_a_mean():
    """mean((2, 3)) (deterministic backward on CUDA) is AdaptiveAvgPool2d(1)'s function; no module, no key."""
    from models.resnet import global_pool

    for arch, layers, width in (("resnet", 20, 1), ("wideresnet", 16, 2)):
        model = build_model(arch, layers, width, 10, 3)
        assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())
        assert not any("pool" in k for k in model.state_dict())
    x = torch.randn(2, 5, 7, 7, dtype=torch.float64, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    torch.testing.assert_close(global_pool(x), nn.AdaptiveAvgPool2d(1)(y).flatten(1), rtol=1e-12, atol=0)
    global_pool(x).sum().backward(), nn.AdaptiveAvgPool2d(1)(y).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-12, atol=0)


def test_benchmarks_wait_on_the_device_they_time(monkeypatch):
    from benchmarks.common import sync

    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(device))
    sync("cpu")
    sync("cuda:1")
    assert seen == [torch.device("cuda:1")]


def test_attack_batches_are_drawn_on_the_generators_device(monkeypatch):
    from mia import nn_attacks

    devices = []
    real = torch.randperm
    monkeypatch.setattr(torch, "randperm", lambda *a, **k: (devices.append(k.get("device")), real(*a, **k))[1])
    list(nn_attacks._batches(100, 32, torch.Generator()))
    assert devices == [torch.device("cpu")]  # the generator's device: on CUDA no host copy per batch
