"""Packed training: K models of one configuration trained at once as one network (docs/packing.md).

pack_models(models) builds a network computing K single models side by side: each Conv2d becomes a
grouped convolution (groups = K x its groups) over the K models' channels, each BatchNorm2d one
BatchNorm2d over the K x C channels (per-channel statistics: every model keeps its own), the final
Linear a batched matmul. Its input is the K models' batches concatenated along channels
[B, K*C_in, H, W] (each model its own images), its output [B, K, classes].

It is a wrapper, not a second model: every parameter and buffer of each single model becomes a slice
(a view) of the packed tensor, so the optimizer steps the packed tensors and each single model always
holds its current weights. Pruning stays per model: each model's Pruner (pruning/pruner.py, unchanged)
ranks its own slices (exact per-model sparsity, its own refreshes and reactivation counts), and its
masks and DPF dense weights become slices of packed tensors too (tie_masks), so the pruning step hook
(pruning/pruner.PruningHook, the one a lone model uses) runs once over the packed tensors instead of once per
model. After training each single model is a
normal model (unpack() gives it its own storage); checkpoints, summaries and signals are written per
model as without packing.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from utils.errors import UsageError

MAX_AUTO_PACK = 17  # the largest pack chosen automatically: a default configuration (target + 16 shadows)


class PackedLinear(nn.Module):
    """K Linear layers as one batched matmul: [B, K * in] -> [B, K, out]. weight [K, out, in], bias [K, out]."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.k, self.in_features, self.out_features = k, in_features, out_features
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, out_features)) if bias else None

    def forward(self, x):
        xk = x.reshape(x.shape[0], self.k, self.in_features).transpose(0, 1)  # [K, B, in]
        w = self.weight.transpose(1, 2)                                        # [K, in, out]
        out = torch.bmm(xk, w) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), xk, w)
        return out.transpose(0, 1)                                             # [B, K, out]


def _packed_module(m: nn.Module, k: int) -> nn.Module | None:
    if isinstance(m, nn.Conv2d):
        return nn.Conv2d(k * m.in_channels, k * m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                         groups=k * m.groups, bias=m.bias is not None, padding_mode=m.padding_mode)
    if isinstance(m, nn.BatchNorm2d):
        return nn.BatchNorm2d(k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.Linear):
        return PackedLinear(k, m.in_features, m.out_features, m.bias is not None)
    if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
        raise UsageError(f"cannot pack a {type(m).__name__} (packing knows Conv2d, BatchNorm2d and Linear); use --pack 1")
    return None


def _slices(packed: torch.Tensor, k: int, stacked: bool) -> list[torch.Tensor]:
    """The K models' views of a packed tensor: stacked (PackedLinear), else concatenated along dim 0."""
    if stacked:
        return [packed[i] for i in range(k)]
    n = packed.shape[0] // k
    return [packed[i * n:(i + 1) * n] for i in range(k)]


def model_slices(net: nn.Module, name: str, tensor: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The K models' views of `tensor`, shaped like the packed network's parameter `name` (its gradient, its
    optimizer state): model i's part of it is what pack_models made model i's parameter of that name."""
    return _slices(tensor, k, isinstance(net.get_submodule(name.rpartition(".")[0]), PackedLinear))


@torch.no_grad()
def _tie(packed: torch.Tensor, singles: list[torch.Tensor], stacked: bool) -> list[torch.Tensor]:
    """Copy the singles into `packed` (concatenated along dim 0, or stacked) and return their slices."""
    views = _slices(packed, len(singles), stacked)
    for v, s in zip(views, singles):
        v.copy_(s)
    return views


def hidden_linear(model: nn.Module) -> str | None:
    """The name of the first Linear layer before the model's last one (an MLP's hidden layer), else None.
    One network cannot hold it: its PackedLinear stacks the K models' weights [K, out, in], while the
    per-model pruners' masks are tied to packed tensors by concatenation (tie_masks), and a hidden
    Linear is prunable (pruning/masks.py). Such a model packs sequentially (pack_mode)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return names[0] if len(names) > 1 else None


def pack_models(models: list[nn.Module], memory_format=torch.contiguous_format) -> nn.Module:
    """One network computing `models` side by side (module docstring); their parameters and buffers become
    slices of its tensors from here on. Every model has the same architecture, dtype and device; the forward
    code is the single model's (only its leaf modules are replaced)."""
    k = len(models)
    if k < 2:
        raise ValueError("pack_models needs at least two models")
    ref = models[0]
    if hidden_linear(ref):
        raise UsageError(f"cannot pack the hidden Linear layer '{hidden_linear(ref)}' of a {type(ref).__name__} into "
                         f"one grouped network; use --pack-mode sequential (auto chooses it)")
    p0 = next(ref.parameters())
    net = copy.deepcopy(ref)
    singles = [dict(m.named_modules()) for m in models]
    leaves = []
    for name, mod in list(net.named_modules()):
        new = _packed_module(mod, k)
        if new is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, attr, new)
        leaves.append((name, new))
    net.to(device=p0.device, dtype=p0.dtype)
    net.to(memory_format=memory_format)
    for name, new in leaves:
        mods = [s[name] for s in singles]
        stacked = isinstance(new, PackedLinear)
        for pname, p in new.named_parameters(recurse=False):
            for m, v in zip(mods, _tie(p.data, [getattr(m, pname).data for m in mods], stacked)):
                getattr(m, pname).data = v  # the same Parameter object, now a slice of the packed one
        for bname, b in new.named_buffers(recurse=False):
            if bname == "num_batches_tracked":  # one counter for the pack, shared by every model
                b.copy_(getattr(mods[0], bname))
                for m in mods:
                    setattr(m, bname, b)
                continue
            for m, v in zip(mods, _tie(b, [getattr(m, bname) for m in mods], stacked)):
                setattr(m, bname, v)
    return net


@torch.no_grad()
def unpack(models: list[nn.Module]) -> None:
    """Give each model its own storage again (the packed network can then be freed)."""
    for m in models:
        for p in m.parameters():
            p.data = p.data.clone()
        for mod in m.modules():
            for bname, b in list(mod.named_buffers(recurse=False)):
                setattr(mod, bname, b.clone())


@torch.no_grad()
def tie_masks(pruners: list, net: nn.Module) -> tuple[list, list, list | None]:
    """The lists a packed network's pruning step hook runs over (pruning/pruner.PruningHook): its packed
    prunable parameters, and packed masks and DPF dense weights of which each model's pruner now holds its
    slices (copied in, then tied: the pruners fill their masks in place, so the packed ones follow)."""
    ref = pruners[0]
    named = dict(net.named_parameters())
    params = [named[n] for n in ref.names]
    fmasks, dense = [], ([] if ref.dense is not None else None)
    for i, p in enumerate(params):
        fmasks.append(torch.empty_like(p))
        masks = torch.empty_like(p, dtype=torch.bool)
        for pr, v in zip(pruners, _tie(fmasks[i], [pr.fmask_list[i] for pr in pruners], False)):
            pr.fmask_list[i] = v
        for pr, v in zip(pruners, _tie(masks, [pr.mask_list[i] for pr in pruners], False)):
            pr.mask_list[i] = v
        if dense is not None:
            dense.append(torch.empty_like(p))
            for pr, v in zip(pruners, _tie(dense[i], [pr.dense[i] for pr in pruners], False)):
                pr.dense[i] = v
    return params, fmasks, dense


# -- how a pack computes, how many models at once --------------------------------------------------------
def pack_mode(cfg, device: torch.device, image_shape: tuple[int, ...], model: nn.Module | None = None) -> str:
    """'grouped': one packed network (pack_models: a few large kernels a layer instead of K small ones, the
    lever where a step is bound by kernel launches and per-operator overhead: any GPU, and a CPU on tiny
    images: 8x8 digits at batch 32, 2.2x at K = 4). 'sequential': each model's forward and backward in
    turn on its own tensors, then one optimizer step and one set of pruning hooks for the pack (foreach
    over every model's tensors). On a CPU with CIFAR-sized images a step is bound by arithmetic and memory:
    oneDNN's grouped convolutions in channels_last are slower than plain ones (0.70x for a 16-channel
    32x32 layer at K = 4) and a packed layer's output is K times larger, so there the pack computes model
    by model. Both compute each model's own step (tests/test_packing.py, float64). cfg.pack_mode other
    than 'auto' decides; auto: sequential for a model with a hidden Linear layer (hidden_linear: an MLP), else
    grouped on CUDA or for images of at most 16 x 16 pixels, else sequential."""
    if cfg.pack_mode != "auto":
        return cfg.pack_mode
    if model is not None and hidden_linear(model):
        return "sequential"
    return "grouped" if device.type == "cuda" or image_shape[-1] * image_shape[-2] <= 256 else "sequential"


def activation_elements(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Elements of every leaf module's output for one image: a bound on what a training step keeps for
    its backward pass, per image. Shapes only (meta tensors): no memory, no compute."""
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        total += out.numel()

    meta = copy.deepcopy(model).to("meta")
    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty((1, *image_shape), device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


def auto_pack(cfg, device: torch.device, free_bytes: int | None = None, image_shape=(3, 32, 32)) -> int:
    """--pack when not given: 1 on CPU (a pack gains little there: docs/packing.md); on CUDA as many models
    as fit in half the free memory, at most MAX_AUTO_PACK. Per model: twice its activations of one batch
    (leaf outputs, 4 bytes each: a bound, bf16 halves it) plus 4 copies of its parameters (weights,
    gradients, momentum, DPF dense weights and masks). image_shape: CIFAR's, the largest input here."""
    if cfg.pack:
        return cfg.pack
    if device.type != "cuda":
        return 1
    from models import build_model

    model = build_model(cfg.arch, cfg.layers, cfg.width_factor, 100, image_shape[0])
    per_model = (2 * 4 * cfg.batch_size * activation_elements(model, image_shape)
                 + 4 * 4 * sum(p.numel() for p in model.parameters()))
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info(device)[0]
    return max(1, min(MAX_AUTO_PACK, int(0.5 * free_bytes // per_model)))
