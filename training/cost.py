"""What a study will cost before it trains (train.py --dry-run): models, epochs and images per model, and the
time at a training rate measured here, on this machine, with the study's model and batch size (a few steps on
random images: a second or two), so the estimate follows the hardware rather than a table of past machines."""
from __future__ import annotations

import time

import torch

from configs.config import ExperimentConfig
from data.datasets import ArrayDataset
from training.membership import keep_matrix
from training.model_io import build_for
from training.precision import configure_backends
from training.trainer import config_steps
from utils.device import resolve_device
from utils.errors import UsageError

EVAL_SPEEDUP = 3.0  # an eval forward costs about a third of a training step per image (no backward)


def measured_rate(cfg: ExperimentConfig, ds: ArrayDataset, batch: int, steps: int = 5) -> float:
    """Training images per second of cfg's model at `batch` on cfg's device (fp32 forward + backward + SGD)."""
    device = resolve_device(cfg.device)
    configure_backends(device)
    model = build_for(cfg, ds, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, ds.in_channels, *_spatial(ds), device=device)
    y = torch.randint(0, ds.num_classes, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):  # warm-up: first-call allocations and kernel selection (oneDNN, cuDNN) take several steps
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def _spatial(ds: ArrayDataset) -> tuple[int, int]:
    """(H, W) of the model's input (ArrayDataset holds [N, C, H, W]; feature vectors [N, F, 1, 1])."""
    return ds.x_train.shape[2], ds.x_train.shape[3]


def model_cost(cfg: ExperimentConfig, pool: int, test: int) -> dict:
    """One model of cfg on a pool of `pool` examples and a test split of `test`: its training images (epochs x
    steps x batch) and evaluation forward passes (validation epochs, the final train/val/test evaluation, the
    signals)."""
    loop = cfg.fit_config()
    keep = keep_matrix(cfg.num_shadows + 1, pool, cfg.mia_seed)
    batch, iters = config_steps(keep, cfg.batch_size)
    n_val = int(round(cfg.val_fraction * test))
    validations = sum(loop.validated(e) for e in range(1, loop.epochs + 1))
    evals = validations * n_val + int(keep[0].sum()) + test + pool * (cfg.mia_queries + cfg.sens_draws)
    return {"batch": batch, "epochs": loop.epochs, "train_images": loop.epochs * iters * batch, "eval_images": evals}


def _iterative(cfg: ExperimentConfig) -> bool:
    """imp, lth: the loop runs --prune-rounds rounds (lth: each a full training from --rewind-epoch)."""
    from pruning import PRUNING_METHODS

    return bool(PRUNING_METHODS[cfg.method].iterative)


def study_cost(configs: list[ExperimentConfig], models_to_train: dict[str, int], load) -> list[str]:
    """Lines stating the cost of training `models_to_train` (experiment name -> count) of `configs`.
    load(cfg) -> ArrayDataset (the study's loader). Data that cannot be loaded (absent offline) still gives the
    counts when --pool-size and --test-size fix the sizes; the time then is not estimated, and the line says why."""
    lines, total_s, total_models, why = [], 0.0, 0, None
    rates: dict[tuple, float] = {}
    for cfg in configs:
        n = models_to_train.get(cfg.name, 0)
        if n == 0:
            continue
        total_models += n
        try:
            ds = load(cfg)
            pool, test = len(ds.y_train), len(ds.y_test)
        except UsageError as e:
            ds, why = None, str(e)
            if cfg.pool_size is None or cfg.test_size is None:
                lines.append(f"  {cfg.name}: {n} model(s) x {cfg.fit_config().epochs} epochs (sizes unknown: {e})")
                continue
            pool, test = cfg.pool_size, cfg.test_size
        c = model_cost(cfg, pool, test)
        rounds = f" ({cfg.prune_rounds} rounds x {c['epochs'] // cfg.prune_rounds} epochs)" if _iterative(cfg) else ""
        line = (f"  {cfg.name}: {n} model(s) x {c['epochs']} epochs{rounds} x {c['train_images'] // c['epochs']} images "
                f"= {c['train_images']:,} training images each")
        if ds is not None:
            key = (cfg.arch, cfg.layers, cfg.width_factor, cfg.dataset, c["batch"], cfg.device)
            if key not in rates:
                rates[key] = measured_rate(cfg, ds, c["batch"])
            seconds = c["train_images"] / rates[key] + c["eval_images"] / (EVAL_SPEEDUP * rates[key])
            total_s += n * seconds
            line += f", ~{seconds:.0f} s each at {rates[key]:.0f} images/s"
        lines.append(line)
    if why is not None:
        lines.append(f"estimated cost: {total_models} model(s); time not estimated: {why}")
        return lines
    threads = torch.get_num_threads()
    lines.append(f"estimated cost: {total_models} model(s), ~{total_s / 60:.0f} min of training and evaluation passes "
                 f"one model at a time ({threads} thread(s); rate measured on this machine just now: a loaded machine "
                 f"reads slow), plus the attacks (~15% more in the reference study, docs/results.md); an executor "
                 f"running k single-threaded models at once (--executor ray --cpus-per-model 1) divides it by about "
                 f"0.8 k on k cores")
    return lines
