"""A model's artifacts: how a model of a configuration is built and seeded, measured (evaluate), written
(its checkpoints and summary, write_model; a dense run's rewind points, RewindKeeper) and loaded again from its
checkpoint alone (load_model). The training loop (training/trainer.py) produces what is written here; the
format of each file is docs/run_directory.md. Checkpoints hold CPU tensors, so CPU-only machines load them.
"""
from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from artifacts import paths
from configs.config import ExperimentConfig
from data import ArrayDataset, DeviceData
from defenses import defended_model, defense_summary
from models import build_model, count_params
from pruning import measure_sparsity
from pruning.criteria import filter_sparsity
from training.precision import autocast
from utils.errors import UsageError
from utils.io import file_digest, load_torch, save_json, save_torch


def model_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed for model `index` of a study seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def to_cpu(state: dict) -> dict:
    """A state dict with every tensor on the CPU (checkpoints load on CPU-only machines)."""
    return {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for k, v in state.items()}


def build_for(cfg: ExperimentConfig, ds: ArrayDataset, device: torch.device) -> torch.nn.Module:
    model = defended_model(cfg, build_model(cfg.arch, cfg.layers, cfg.width_factor, ds.num_classes, ds.in_channels)).to(device)
    if cfg.channels_last:  # NHWC convolutions: faster with cuDNN and with oneDNN on CPU (~1.5x for ResNet-20)
        model = model.to(memory_format=torch.channels_last)
    return model


def param_dtype(model) -> torch.dtype:
    """The dtype a model computes in (float64 in the reference tests, else float32)."""
    return next(model.parameters()).dtype


@torch.no_grad()
def evaluate(model, data: DeviceData, cfg: ExperimentConfig, device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode over every image once."""
    model.eval()
    loss_sum, correct = 0.0, 0
    dtype = param_dtype(model)
    # A CPU evaluates in fp32 even where it trains in bf16: validation (which selects the checkpoint) and test
    # accuracy are measured as they always were there (about 3% of a CIFAR epoch); CUDA autocasts, as it did.
    cast = autocast(cfg, device, dtype) if device.type == "cuda" else contextlib.nullcontext()
    for xb, yb in data.batches(max(cfg.batch_size, 512), gen=None, train=False):
        with cast:
            out = model(xb.to(dtype)).float()
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    return loss_sum / max(1, len(data)), correct / max(1, len(data))


def initial_state(cfg: ExperimentConfig, num_classes: int, in_channels: int, index: int) -> dict:
    """Model `index`'s initialisation as Seat builds it (torch's global stream seeded with model_seed(seed,
    index), then the model built on the CPU), regenerated without training: lth's rewind point at epoch 0 for a
    dense run that has no rewind artifact (training/sources.load_rewind). CPU tensors; the global stream is
    left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(cfg.seed, index))
        model = defended_model(cfg, build_model(cfg.arch, cfg.layers, cfg.width_factor, num_classes, in_channels))
    return to_cpu(model.state_dict())


class RewindKeeper:
    """A dense run's rewind points (pruning/iterative.REWIND_EPOCHS; lth's --rewind-epoch): each model's state at
    its start and at the end of those epochs, one file per model (artifacts/paths.REWIND), rewritten atomically
    as each epoch is reached, so a resumed run adds to what its first part kept. __call__(epochs_done) is
    Trainer.fit's after_epoch step."""

    def __init__(self, tr, out_dirs: list[Path]):
        from pruning.iterative import REWIND_EPOCHS

        self.tr, self.out_dirs, self.epochs = tr, [Path(d) for d in out_dirs], REWIND_EPOCHS

    def __call__(self, epochs_done: int) -> None:
        if epochs_done not in self.epochs:
            return
        for m, out in zip(self.tr.seats, self.out_dirs):
            path = out / paths.REWIND
            kept = load_torch(path)["states"] if epochs_done and path.exists() else {}
            if m.failed:
                continue
            kept[epochs_done] = to_cpu(m.model.state_dict())
            save_torch({"model_index": m.index, "states": kept}, path)


CHANCE_SIGMAS = 3  # "at chance": the best validation accuracy within this many standard errors of 1 / classes


def checkpoint(tr, seat, entry: dict) -> dict:
    """A checkpoint of one model of trainer tr: a snapshot's weights (CPU tensors), epoch and masks, and what
    rebuilds the model alone (its config, classes and input channels: load_model)."""
    return {"state_dict": to_cpu(entry["state"]), "epoch": entry["epoch"], "model_index": seat.index,
            "masks": entry["masks"],
            "config": seat.cfg.to_dict(), "num_classes": tr.ds.num_classes,
            "in_channels": tr.ds.in_channels}


def at_chance(history: list[dict], num_classes: int, num_val: int) -> bool:
    """Whether a model's validation accuracy never left chance: its best over the epochs validated (val_acc
    None on the others) is at most 1/classes + CHANCE_SIGMAS standard errors of an accuracy over num_val
    images. Such a model is kept (a result, e.g. DP-SGD with much noise) but flagged: its attacks measure
    a model that learned nothing."""
    accs = [r["val_acc"] for r in history if r.get("val_acc") is not None]
    if not accs or num_val == 0:
        return False
    p = 1.0 / num_classes
    return max(accs) <= p + CHANCE_SIGMAS * (p * (1 - p) / num_val) ** 0.5


def write_model(tr, m, res: dict, out_dir: Path, source: dict | None = None):
    """Write seat m of trainer tr once trained (res: its entry of Trainer.fit): its last and best checkpoints and
    its summary, measured on a fresh model loaded with the best checkpoint's weights. Returns (summary, that
    model in eval mode)."""
    cfg = m.cfg
    made_from = {"source": source} if source else {}  # a fine-tuned model names the checkpoint it started from
    save_torch({**checkpoint(tr, m, res["last"]), **made_from}, out_dir / paths.LAST_MODEL)
    save_torch({**checkpoint(tr, m, res["best"]), **made_from}, out_dir / paths.BEST_MODEL)
    digests = {f: file_digest(out_dir / f) for f in (paths.LAST_MODEL, paths.BEST_MODEL)}  # signals': write_signals
    # Evaluate exactly what was saved: a fresh plain model loaded with the best checkpoint's weights.
    model = build_for(cfg, tr.ds, tr.device).to(param_dtype(m.model))
    model.load_state_dict(res["best"]["state"])
    train_loss, train_acc = evaluate(model, m.train, cfg, tr.device)  # members, no augmentation
    test_loss, test_acc = evaluate(model, tr.test, cfg, tr.device)
    val_loss, val_acc = evaluate(model, tr.val, cfg, tr.device)
    # Measurements only: the recipe is the config.json beside it (mia/artifacts.model_record joins them).
    sparsity = measure_sparsity(model)  # on the saved weights
    dev = tr.device
    chance = at_chance(res["history"], tr.ds.num_classes, len(tr.val))
    if chance:
        tqdm.write(f"warning: {cfg.name} model {m.index}: its validation accuracy never left chance (best "
                   f"{max(r['val_acc'] for r in res['history'] if r.get('val_acc') is not None):.3f}, chance "
                   f"{1 / tr.ds.num_classes:.3f} over {len(tr.val)} images): kept, flagged at_chance in its summary")
    summary = {
        "model_index": m.index, "num_train": len(m.train), "num_params": count_params(model),
        "train_acc": train_acc, "train_loss": train_loss, "test_acc": test_acc, "test_loss": test_loss,
        "val_acc": val_acc, "val_loss": val_loss, "best_epoch": res["best"]["epoch"],
        "wall_time_s": res["wall_time_s"], "images_per_s": res["images_per_s"],
        "iters_per_epoch": tr.iters, "batch_used": tr.batch, "pack_size": len(tr.seats),
        "pack_mode": tr.mode,
        "device": str(dev), "device_type": dev.type, "precision": tr.precision,
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
        "torch_version": torch.__version__,
        "measured_sparsity": sparsity.pop("sparsity"), **sparsity,  # over the prunable set, then all params, per layer
        **defense_summary(tr.cfg, len(m.train), tr.batch, tr.iters),  # dp: epsilon at delta, GroupNorm
        "filter_sparsity": filter_sparsity(model),  # fraction of conv output filters that are entirely zero
        "at_chance": chance,  # validation accuracy never above chance (at_chance): kept, flagged in the report
        **made_from, "history": res["history"], "digests": digests,
    }
    save_json(summary, out_dir / paths.SUMMARY)
    return summary, model.eval()


def load_model(checkpoint_path: str | Path, device="cpu") -> tuple[torch.nn.Module, ExperimentConfig]:
    """Rebuild a model from its checkpoint alone (config inside); eval mode."""
    ck = load_torch(checkpoint_path)
    try:
        cfg = ExperimentConfig.from_dict(ck["config"])
        model = defended_model(cfg, build_model(cfg.arch, cfg.layers, cfg.width_factor, ck["num_classes"], ck["in_channels"]))
        model.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise UsageError(f"checkpoint {checkpoint_path} is not a model of this pipeline: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), cfg
