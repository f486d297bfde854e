"""On-device input pipeline: the whole dataset lives on the training device as uint8; shuffling,
random crop + flip and normalisation are batched tensor ops there. No per-sample Python work.

This is what makes training fast (see benchmarks/train_throughput.py): a DataLoader spends CPU time
per image on PIL/ToTensor and, on a GPU, on host->device copies every batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from data.datasets import ArrayDataset


def split_test(ds: ArrayDataset, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (validation, test) within the test split: a fixed permutation (seed 0) so every
    model of every configuration selects on the same images and reports on the same others."""
    perm = np.random.RandomState(0).permutation(len(ds.x_test))
    n_val = max(1, int(round(val_fraction * len(perm))))
    return np.sort(perm[:n_val]), np.sort(perm[n_val:])


@dataclass
class DeviceData:
    """uint8 images [N, C, H, W] and int64 labels held on `device`, with their normalisation."""
    x: torch.Tensor
    y: torch.Tensor
    mean: torch.Tensor  # [1, C, 1, 1] float32, per-channel mean of the pool in [0, 1] units
    std: torch.Tensor   # [1, C, 1, 1]
    pad: int            # random-crop padding in pixels
    flip: bool          # random horizontal flips

    @classmethod
    def build(cls, x: np.ndarray, y: np.ndarray, ds: ArrayDataset, device) -> "DeviceData":
        # Normalisation statistics come from the whole pool (not from a model's members), so every
        # model of every configuration sees identical inputs for the same image; computed once per dataset.
        mean, std = (torch.from_numpy(v).view(1, -1, 1, 1).to(device) for v in ds.pool_stats)
        return cls(torch.from_numpy(np.ascontiguousarray(x)).to(device), torch.from_numpy(y).to(device),
                   mean, std.clamp_min(1e-3), ds.pad, ds.flip)

    def __len__(self) -> int:
        return len(self.y)

    def normalize(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> normalised float32."""
        return (xb.float().div_(255) - self.mean) / self.std

    def augment(self, xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Random crop with zero padding (like torchvision RandomCrop(padding=pad)) + random flip,
        on a uint8 batch, as one gather: offsets are drawn per image."""
        return self.crop(xb, *self.draw_crops(len(xb), gen))

    def draw_crops(self, b: int, gen: torch.Generator) -> tuple:
        """The random draws of augment() for b images, in its order: (dy [B,1], dx [B,1], flip [B] or None).
        A pack of models (training/trainer.py) draws each model's from its own generator, then crops
        all of them in one crop() call."""
        p, dev = self.pad, self.x.device
        dy = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        dx = torch.randint(0, 2 * p + 1, (b, 1), device=dev, generator=gen)
        flip = torch.rand(b, device=dev, generator=gen) < 0.5 if self.flip else None
        return dy, dx, flip

    def crop(self, xb: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip) -> torch.Tensor:
        """The crop + flip of draw_crops()'s offsets, as one gather over the zero-padded batch."""
        b, c, h, w = xb.shape
        p = self.pad
        padded = torch.nn.functional.pad(xb, (p, p, p, p))
        rows = (dy + torch.arange(h, device=xb.device))[:, None, :, None]  # [B,1,H,1]
        cols = (dx + torch.arange(w, device=xb.device))[:, None, None, :]  # [B,1,1,W]
        if flip is not None:  # flipping = reading the columns right to left
            cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
        bi = torch.arange(b, device=xb.device)[:, None, None, None]
        ci = torch.arange(c, device=xb.device)[None, :, None, None]
        return padded[bi, ci, rows, cols]

    def batches(self, batch_size: int, gen: torch.Generator, train: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Training: shuffled, augmented, last partial batch dropped (BatchNorm needs > 1 image).
        Evaluation (train=False): in order, no augmentation, every image once."""
        n = len(self)
        if train:
            bs = min(batch_size, n)
            order = torch.randperm(n, device=self.x.device, generator=gen)
            for i in range(n // bs):
                idx = order[i * bs:(i + 1) * bs]
                yield self.normalize(self.augment(self.x[idx], gen)), self.y[idx]
        else:
            for i in range(0, n, batch_size):
                yield self.normalize(self.x[i:i + batch_size]), self.y[i:i + batch_size]

    def iters_per_epoch(self, batch_size: int) -> int:
        return max(1, len(self) // min(batch_size, len(self)))
