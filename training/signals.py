"""Per-model signals over the whole pool (docs/protocol.md, "Signals"), computed once after training.

logits.npy      float32 [pool, queries, classes]: eval mode, no gradients. Query q is an augmented view
                of each image: identity, horizontal flip, then 1-pixel shifts (with and without flip),
                18 in all, as in the LiRA reference code. Datasets trained without flips (digits)
                use shifts only (9 queries at most); feature vectors (tabular data) have one query,
                the record itself (--mia-queries 1).
sensitivity.npy float32 [pool, classes]: SAMIA (Yuan & Zhang): for m = 1..draws, u ~ N(0, I) in the
                model's (normalised) input space, sens = mean_m |softmax(f(x + eps u)) - softmax(f(x))| / eps.

Both are computed in true fp32 on every device (`fp32_pass`): no autocast, even one enabled around the
call (training's bf16 has 8 mantissa bits), and no TF32 (10 bits, ~1e-3 relative: the size of eps).

Attacks read only these arrays, the labels and the keep matrix; they never reload a model. Non-finite
signals (a model that overflows) are refused, not written (DivergenceError: the model gets no COMPLETE),
and each written file's content hash goes into the model's summary ("digests"), which the reader checks
(artifacts/rundir.py).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import numpy as np
import torch

from artifacts import paths
from data import ArrayDataset, DeviceData, load_dataset
from artifacts.rundir import finished_model_dirs, stale_signals
from training.model_io import load_model, model_seed
from utils.device import resolve_device
from utils.errors import DivergenceError, UsageError, cli_main
from utils.io import count_nonfinite, file_digest, load_json, save_json, save_npy

_SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]


def query_list(flip: bool, features: bool = False) -> list[tuple[bool, int, int]]:
    """(flip, dx, dy) per query, in the fixed order queries are stored in; feature vectors: the identity only
    (a record has no pixels to shift)."""
    if features:
        return [(False, 0, 0)]
    if not flip:
        return [(False, dx, dy) for dx, dy in _SHIFTS]
    return [(f, dx, dy) for dx, dy in _SHIFTS for f in (False, True)]


def _view(xb: torch.Tensor, flip: bool, dx: int, dy: int) -> torch.Tensor:
    """Shift a uint8 batch by (dx, dy) pixels with zero fill (as the training crop pads), then flip."""
    if dx or dy:
        h, w = xb.shape[-2:]
        xb = torch.nn.functional.pad(xb, (1, 1, 1, 1))[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return xb.flip(-1) if flip else xb


SIGNAL_BUDGET_BYTES = 4 * 2**30  # GPU: activations of one signal pass, bounded by the sum of every layer's output


def _batch_size(device: torch.device, model=None, image_shape=None) -> int:
    """Images per forward pass. CPU: small batches stay in cache (ResNet-20 eval, channels_last, 2 cores:
    64 -> ~3,500 images/s, 256 -> ~2,000, 512 -> ~1,250). GPU: large batches keep the device busy, sized
    by the model: as many images as keep the sum of its layers' fp32 outputs (a bound: eval frees them
    as it goes) under SIGNAL_BUDGET_BYTES, 64..4096 (CIFAR: ResNet-20 2,259, WRN-28-2 1,065, WRN-28-10
    218; the real peak is a few layers' outputs, well below the bound). It
    depends on the model only, not on free memory, so a seed gives the same SAMIA noise on every GPU."""
    if device.type != "cuda":
        return 64
    if model is None:
        return 4096
    from training.packing import activation_elements

    per_image = 4 * activation_elements(model, tuple(image_shape))
    return int(max(64, min(4096, SIGNAL_BUDGET_BYTES // max(per_image, 1))))


def _tf32_knobs() -> list[tuple[object, str, object]]:
    """(object, attribute, fp32 value) of the TF32 switches of cuDNN convolutions and CUDA matmuls.
    torch >= 2.9 has per-operator `fp32_precision` flags; reading the legacy `allow_tf32` flags raises
    once the new ones were used (and vice versa may), so use the new API wherever it exists."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if hasattr(getattr(cudnn, "conv", None), "fp32_precision") and hasattr(matmul, "fp32_precision"):
        return [(cudnn.conv, "fp32_precision", "ieee"), (matmul, "fp32_precision", "ieee")]
    return [(cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]


@contextlib.contextmanager
def fp32_pass(device: torch.device):
    """True fp32 inside: autocast off for `device` (an enclosing autocast, such as training's bf16, would
    otherwise reach the model) and TF32 off; cudnn.benchmark off too (training turns it on: autotuning
    per batch shape could pick different algorithms from run to run, and the last batch's shape differs);
    the global settings are restored on exit.
    Fragile: the flags are process-wide, so another thread's CUDA work runs without TF32 meanwhile."""
    knobs = _tf32_knobs() + [(torch.backends.cudnn, "benchmark", False)]
    saved = [getattr(obj, attr) for obj, attr, _ in knobs]
    try:
        for obj, attr, value in knobs:
            setattr(obj, attr, value)
        with torch.autocast(device_type=torch.device(device).type, enabled=False):
            yield
    finally:
        for (obj, attr, _), value in zip(knobs, saved):
            setattr(obj, attr, value)


@torch.no_grad()
def compute_logits(model, data: DeviceData, num_queries: int, num_classes: int) -> np.ndarray:
    queries = query_list(data.flip, features=data.x.shape[-2:] == (1, 1))  # [N, F, 1, 1]: data/datasets.py
    if num_queries > len(queries):
        raise UsageError(f"--mia-queries {num_queries} exceeds the {len(queries)} queries available for this dataset")
    model.eval()  # fragile: BatchNorm must use running statistics and not update them
    dev = data.x.device
    bs = _batch_size(dev, model, data.x.shape[1:])
    out = torch.empty((len(data), num_queries, num_classes), dtype=torch.float32, device=dev)
    with fp32_pass(dev):
        for i in range(0, len(data), bs):
            xb = data.x[i:i + bs]
            for q, (f, dx, dy) in enumerate(queries[:num_queries]):
                out[i:i + bs, q] = model(data.normalize(_view(xb, f, dx, dy)))
    return out.cpu().numpy()  # one device -> host copy at the end


@torch.no_grad()
def compute_sensitivity(model, data: DeviceData, num_classes: int, draws: int, eps: float, seed: int) -> np.ndarray:
    """In fp32 (a 1e-3 perturbation is below bf16 and TF32 resolution). x and its draws go through ONE
    forward pass: on CUDA a different batch size can select a different cuDNN algorithm, whose rounding
    differences (~1e-7 relative in fp32) would be divided by eps and read as sensitivity."""
    model.eval()
    dev = data.x.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    # rows per step: a row and its draws go through one pass. CPU: about _batch_size images, kept at
    # // draws (not draws + 1): the row blocks fix each example's noise draws, and these give the same
    # noise per example as a pass per draw;
    # GPU: at most _batch_size images (the model's budget) in the pass.
    if dev.type == "cuda":
        bs = max(1, _batch_size(dev, model, data.x.shape[1:]) // (draws + 1))
    else:
        bs = max(1, _batch_size(dev) // max(1, draws))
    out = torch.empty((len(data), num_classes), dtype=torch.float32, device=dev)
    with fp32_pass(dev):
        for i in range(0, len(data), bs):
            x = data.normalize(data.x[i:i + bs])
            u = torch.randn((draws,) + x.shape, generator=gen, device=dev)
            batch = torch.cat([x, (x.unsqueeze(0) + eps * u).flatten(0, 1)])  # clean rows, then draw-major
            p = torch.softmax(model(batch), dim=1)
            clean, perturbed = p[:len(x)], p[len(x):].view(draws, len(x), -1)
            out[i:i + bs] = (perturbed - clean.unsqueeze(0)).abs().mean(0) / eps
    return out.cpu().numpy()


def write_signals(model, cfg, ds: ArrayDataset, out_dir: Path, device, index: int = 0) -> None:
    """Compute and atomically write logits.npy and sensitivity.npy for the whole pool, and record their
    content hashes in the model's summary. Non-finite signals are refused (DivergenceError), nothing written."""
    pool = DeviceData.build(ds.x_train, ds.y_train, ds, device)
    logits = compute_logits(model, pool, cfg.mia_queries, ds.num_classes)  # fp32 whatever cfg.amp says
    sens = compute_sensitivity(model, pool, ds.num_classes, cfg.sens_draws, cfg.sens_eps, model_seed(cfg.mia_seed, 10_000 + index))
    del pool
    free_device_cache(device)
    signals = {paths.LOGITS: logits, paths.SENSITIVITY: sens}
    for name, arr in signals.items():
        bad = count_nonfinite(arr)
        if bad:
            raise DivergenceError(f"{cfg.name} model {index}: {bad} of {arr.size} entries of its {name} are not finite "
                                  f"(NaN or inf): its weights overflow on the pool; signals not written, no "
                                  f"{paths.COMPLETE} marker (lower --lr or try --no-amp)")
    for name, arr in signals.items():
        save_npy(arr, Path(out_dir) / name)
    record_digests(out_dir, list(signals))


def record_digests(model_dir: str | Path, names: list[str]) -> None:
    """Record the content hashes of a model's files `names` in its summary ("digests": file name -> digest),
    which the reader checks (artifacts/rundir.py: stale_signals). A directory without a summary records nothing."""
    summary_file = Path(model_dir) / paths.SUMMARY
    if not summary_file.exists():
        return
    summary = load_json(summary_file)
    summary["digests"] = {**summary.get("digests", {}), **{n: file_digest(Path(model_dir) / n) for n in names}}
    save_json(summary, summary_file)


def free_device_cache(device) -> None:
    """Give the allocator's cached blocks back after a model's signals: a Ray worker (or a study's loop)
    would otherwise keep the largest pass's memory reserved while the next model trains."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def ensure_signals(model_dir: str | Path, device: str = "auto") -> bool:
    """Recompute a model's signals from its best checkpoint if missing or stale. True if recomputed."""
    model_dir = Path(model_dir)
    if not (model_dir / paths.BEST_MODEL).exists():
        raise UsageError(f"no {paths.BEST_MODEL} in {model_dir}: cannot compute its signals")
    dev = resolve_device(device)
    model, cfg = load_model(model_dir / paths.BEST_MODEL, dev)
    if stale_signals(model_dir, cfg.mia_queries, need_sensitivity=True) is None:
        return False  # present, current and as written (their recorded content hashes)
    write_signals(model, cfg, load_dataset(cfg), model_dir, dev, index=model_seed_index(model_dir))
    return True


def model_seed_index(model_dir: Path) -> int:
    return int(model_dir.name) if model_dir.parent.name == paths.SHADOWS else 0


@cli_main
def main(argv=None) -> None:
    """python -m training.signals RUNS_OR_EXPERIMENT_DIR: recompute the missing or stale signals of every
    finished model below it (the mia/ scripts only read them and name this command when they are stale)."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("path", help="a runs directory or one experiment directory")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    exps = paths.find_experiments(args.path)
    if not exps:
        raise UsageError(f"no experiment below {args.path} (no {paths.KEEP_MATRIX})")
    for exp in exps:
        for d in finished_model_dirs(exp):
            if ensure_signals(d, args.device):
                print(f"recomputed the signals of {d}")


if __name__ == "__main__":
    main(sys.argv[1:])
