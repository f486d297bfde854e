"""Train one model (dense or pruned) on a given subset of the pool and write its artifacts.

The loop is the same on CPU and CUDA; CUDA adds bf16 autocast (BatchNorm stays fp32 under autocast);
channels_last is used on both. Checkpoint selection uses a validation slice of the *test* split, never the pool,
and only epochs at which a pruned model has reached its target sparsity.
"""
from __future__ import annotations

import contextlib
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from configs import paths
from configs.config import ExperimentConfig
from data import ArrayDataset, DeviceData, split_test
from models import build_model, count_params
from pruning import measure_sparsity
from utils.device import resolve_device
from utils.errors import UsageError
from utils.io import save_json, save_torch


def model_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed for model `index` of a study seeded with `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def autocast(cfg: ExperimentConfig, device: torch.device):
    """bf16 autocast on CUDA only: the CPU path runs the same code in fp32."""
    if device.type == "cuda" and cfg.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_for(cfg: ExperimentConfig, ds: ArrayDataset, device: torch.device) -> torch.nn.Module:
    model = build_model(cfg.arch, cfg.layers, cfg.width_factor, ds.num_classes, ds.in_channels).to(device)
    if cfg.channels_last:  # NHWC convolutions: faster with cuDNN and with oneDNN on CPU (~1.5x for ResNet-20)
        model = model.to(memory_format=torch.channels_last)
    return model


@torch.no_grad()
def evaluate(model, data: DeviceData, cfg: ExperimentConfig, device) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode over every image once."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for xb, yb in data.batches(max(cfg.batch_size, 512), gen=None, train=False):
        with autocast(cfg, device):
            out = model(xb).float()
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        correct += (out.argmax(1) == yb).sum().item()
    return loss_sum / max(1, len(data)), correct / max(1, len(data))


def _clone_state(state: dict) -> dict:
    return {k: v.detach().clone() for k, v in state.items()}


class Trainer:
    """One model: build, train for cfg.epochs, keep the best eligible state, write checkpoints."""

    def __init__(self, cfg: ExperimentConfig, ds: ArrayDataset, keep: np.ndarray, index: int = 0):
        self.cfg, self.ds, self.index = cfg, ds, index
        self.device = resolve_device(cfg.device)
        torch.manual_seed(model_seed(cfg.seed, index))
        self.gen = torch.Generator(device=self.device).manual_seed(model_seed(cfg.seed, index))
        val_idx, test_idx = split_test(ds, cfg.val_fraction)
        members = np.flatnonzero(keep)
        self.train = DeviceData.build(ds.x_train[members], ds.y_train[members], ds, self.device)
        self.val = DeviceData.build(ds.x_test[val_idx], ds.y_test[val_idx], ds, self.device)
        self.test = DeviceData.build(ds.x_test[test_idx], ds.y_test[test_idx], ds, self.device)
        self.model = build_for(cfg, ds, self.device)
        self.step_model = torch.compile(self.model) if cfg.compile else self.model
        self.iters = self.train.iters_per_epoch(cfg.batch_size)
        self.pruner = self._build_pruner()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        self.sched = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=cfg.milestones, gamma=cfg.gamma)

    def _build_pruner(self):
        if not self.cfg.prune:
            return None
        from pruning import build_pruner

        c = self.cfg
        return build_pruner(c.prune_method, self.model, c.sparsity, self.iters, c.target_epoch,
                            c.freeze_epoch, c.prune_freq)

    def snapshot(self, epoch: int) -> dict:
        """Weights as saved (exactly sparse for pruned models: pruned weights stored as zeros) and
        the masks of that moment (DPF masks still move between the target and freeze epochs)."""
        state = self.pruner.sparse_state_dict() if self.pruner else self.model.state_dict()
        masks = {k: v.detach().cpu().clone() for k, v in self.pruner.masks.items()} if self.pruner else {}
        return {"epoch": epoch, "state": _clone_state(state), "masks": masks}

    def train_epoch(self, epoch: int, bar) -> tuple[float, float, int]:
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)  # accumulated on device: no per-step sync
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        for i, (xb, yb) in enumerate(self.train.batches(self.cfg.batch_size, self.gen)):
            it = epoch * self.iters + i
            if self.pruner:
                self.pruner.before_step(it)
            with autocast(self.cfg, self.device):
                out = self.step_model(xb)
                loss = F.cross_entropy(out.float(), yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.pruner:
                self.pruner.before_optimizer_step()
            self.opt.step()
            if self.pruner:
                self.pruner.after_optimizer_step()
            loss_sum += loss.detach() * len(yb)
            correct += (out.argmax(1) == yb).sum()
            seen += len(yb)
            bar.update(1)
            if self.cfg.verbose:
                tqdm.write(f"model {self.index} epoch {epoch + 1} iter {i + 1}/{self.iters} loss {loss.item():.4f}")
        return loss_sum.item() / seen, correct.item() / seen, seen

    def fit(self) -> dict:
        cfg = self.cfg
        history, best, best_key = [], None, None
        t0, train_time, images = time.time(), 0.0, 0
        for epoch in range(cfg.epochs):
            lr = self.opt.param_groups[0]["lr"]
            with tqdm(total=self.iters, desc=f"[{cfg.name} #{self.index}] epoch {epoch + 1}/{cfg.epochs}",
                      leave=False, disable=None, dynamic_ncols=True) as bar:
                te = time.time()
                loss, acc, seen = self.train_epoch(epoch, bar)
                train_time += time.time() - te
                images += seen
            self.sched.step()
            val_loss, val_acc = evaluate(self.model, self.val, cfg, self.device)
            row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss, "train_acc": acc,
                   "val_loss": val_loss, "val_acc": val_acc}
            if self.pruner:
                row.update(self.pruner.end_epoch(epoch))
            history.append(row)
            # Only models at their target sparsity are eligible (a DPF model at epoch 40 is not 90% sparse).
            eligible = self.pruner is None or self.pruner.at_target(epoch)
            key = (val_acc, -val_loss)
            if eligible and (best_key is None or key > best_key):
                best_key, best = key, self.snapshot(epoch + 1)
        last = self.snapshot(cfg.epochs)
        if best is None:  # cannot happen with validated target_epoch <= epochs, kept as a guard
            best = last
        return {"history": history, "best": best, "last": last, "wall_time_s": time.time() - t0,
                "images_per_s": images / max(train_time, 1e-9)}

    def checkpoint(self, entry: dict) -> dict:
        return {"state_dict": entry["state"], "epoch": entry["epoch"], "model_index": self.index,
                "masks": entry["masks"],
                "config": self.cfg.to_dict(), "num_classes": self.ds.num_classes,
                "in_channels": self.ds.in_channels}


def train_model(cfg: ExperimentConfig, ds: ArrayDataset, keep: np.ndarray, out_dir: Path,
                index: int = 0) -> tuple[dict, torch.nn.Module]:
    """Train model `index` on pool[keep]; write checkpoints and summary into out_dir.
    Returns the summary and the selected model as saved (eval mode). Signals and the COMPLETE
    marker are written by the caller."""
    tr = Trainer(cfg, ds, keep, index)
    res = tr.fit()
    out_dir = Path(out_dir)
    save_torch(tr.checkpoint(res["last"]), out_dir / paths.LAST_MODEL)
    save_torch(tr.checkpoint(res["best"]), out_dir / paths.BEST_MODEL)
    # Evaluate exactly what was saved: a fresh plain model loaded with the best checkpoint's weights.
    model = build_for(cfg, ds, tr.device)
    model.load_state_dict(res["best"]["state"])
    train_loss, train_acc = evaluate(model, tr.train, cfg, tr.device)  # members, no augmentation
    test_loss, test_acc = evaluate(model, tr.test, cfg, tr.device)
    val_loss, val_acc = evaluate(model, tr.val, cfg, tr.device)
    # Measurements only: the recipe is the config.json beside it (mia/artifacts.model_record joins them).
    sparsity = measure_sparsity(model)  # on the saved weights
    summary = {
        "model_index": index, "num_train": int(keep.sum()), "num_params": count_params(model),
        "train_acc": train_acc, "train_loss": train_loss, "test_acc": test_acc, "test_loss": test_loss,
        "val_acc": val_acc, "val_loss": val_loss, "best_epoch": res["best"]["epoch"],
        "wall_time_s": res["wall_time_s"], "images_per_s": res["images_per_s"], "device": str(tr.device),
        "device_name": torch.cuda.get_device_name(tr.device) if tr.device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_version": torch.__version__,
        "measured_sparsity": sparsity.pop("sparsity"), **sparsity,  # over the prunable set, then all params, per layer
        "history": res["history"],
    }
    save_json(summary, out_dir / paths.SUMMARY)
    return summary, model.eval()


def load_model(checkpoint_path: str | Path, device="cpu") -> tuple[torch.nn.Module, ExperimentConfig]:
    """Rebuild a model from its checkpoint alone (config inside); eval mode."""
    from utils.io import load_torch

    ck = load_torch(checkpoint_path)
    try:
        cfg = ExperimentConfig.from_dict(ck["config"])
        model = build_model(cfg.arch, cfg.layers, cfg.width_factor, ck["num_classes"], ck["in_channels"])
        model.load_state_dict(ck["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise UsageError(f"checkpoint {checkpoint_path} is not a model of this pipeline: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), cfg
