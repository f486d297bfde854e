"""Dataset registry. Every dataset loads to uint8 arrays (N, C, H, W) plus int64 labels.

- cifar10 / cifar100: torchvision, downloaded into --data-dir when the network allows.
- digits: scikit-learn's bundled 8x8 digits (1,797 images, no download). Fixed split: a permutation
  drawn with numpy seed 0; the first 1,297 images are the training split (the membership pool), the
  last 500 the test split. Pixel values 0..16 are scaled to 0..255.
- npz: --data-path FILE with x_train, y_train, x_test, y_test (uint8 NHWC or NHW, integer labels).

The training split is the membership pool; the test split measures accuracy and lends a validation
slice (see data.loader.split_test) for checkpoint selection.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from utils.errors import UsageError

DIGITS_TRAIN = 1297  # digits: size of the training split (pool); the remaining 500 are the test split


@dataclass
class ArrayDataset:
    name: str
    x_train: np.ndarray  # uint8 [N, C, H, W]: the membership pool
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray   # uint8 [M, C, H, W]: validation slice + test accuracy
    y_test: np.ndarray   # int64 [M]
    num_classes: int
    flip: bool           # horizontal flip is a label-preserving augmentation (not for digits)

    @cached_property
    def pool_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and (unbiased) std of the pool in [0, 1] units, float32 [C] each: the
        normalisation of every model of every configuration. Computed once per dataset, in float64
        sums over chunks (a float32 copy of the CIFAR-10 pool alone would be 600 MB)."""
        n = self.x_train.shape[0] * self.x_train.shape[2] * self.x_train.shape[3]
        total = np.zeros(self.in_channels)
        squares = np.zeros(self.in_channels)
        for i in range(0, len(self.x_train), 4096):
            chunk = self.x_train[i:i + 4096].astype(np.float64) / 255
            total += chunk.sum(axis=(0, 2, 3))
            squares += np.square(chunk).sum(axis=(0, 2, 3))
        mean = total / n
        var = (squares - n * mean ** 2) / max(n - 1, 1)  # float64: the cancellation costs ~1e-12 here
        return mean.astype(np.float32), np.sqrt(np.maximum(var, 0)).astype(np.float32)

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def pad(self) -> int:
        """Random-crop padding: 4 pixels at 32x32 (the standard CIFAR recipe), 1 at 8x8."""
        return max(1, self.x_train.shape[2] // 8)


def _to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise UsageError(f"{what} must be uint8 images, got dtype {x.dtype}")
    if x.ndim == 3:  # NHW grayscale
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):  # NHWC
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise UsageError(f"{what} must be NHWC or NHW uint8, got shape {x.shape}")


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer) or len(y) != n:
        raise UsageError(f"{what} must be {n} integer labels, got dtype {y.dtype} shape {y.shape}")
    return y.astype(np.int64)


def from_arrays(name: str, x_train, y_train, x_test, y_test, flip: bool | None = None) -> ArrayDataset:
    xtr, xte = _to_nchw(np.asarray(x_train), "x_train"), _to_nchw(np.asarray(x_test), "x_test")
    ytr, yte = _labels(y_train, len(xtr), "y_train"), _labels(y_test, len(xte), "y_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise UsageError(f"x_train and x_test image shapes differ: {xtr.shape[1:]} vs {xte.shape[1:]}")
    if min(ytr.min(), yte.min()) < 0:
        raise UsageError("labels must be non-negative integers")
    num_classes = int(max(ytr.max(), yte.max())) + 1
    if flip is None:  # colour images flip, like CIFAR; grayscale (digits, MNIST-like) does not
        flip = xtr.shape[1] == 3
    return ArrayDataset(name, xtr, ytr, xte, yte, num_classes, flip)


def load_digits_dataset(cfg) -> ArrayDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # [1797, 8, 8]
    perm = np.random.RandomState(0).permutation(len(x))
    tr, te = perm[:DIGITS_TRAIN], perm[DIGITS_TRAIN:]
    return from_arrays("digits", x[tr], d.target[tr], x[te], d.target[te], flip=False)


def load_npz_dataset(cfg) -> ArrayDataset:
    path = Path(cfg.data_path)
    if not path.is_file():
        raise UsageError(f"--data-path {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
            if missing:
                raise UsageError(f"{path} lacks arrays {missing}; needs x_train, y_train, x_test, y_test")
            arrays = [z[k] for k in ("x_train", "y_train", "x_test", "y_test")]
    except UsageError:
        raise
    except Exception as e:
        raise UsageError(f"cannot read {path} as .npz: {e}") from None
    return from_arrays("npz", *arrays)


def _torchvision_loader(tv_name: str, files: str) -> Callable:
    def load(cfg) -> ArrayDataset:
        import torchvision

        cls = getattr(torchvision.datasets, tv_name)
        root = Path(cfg.data_dir)
        try:
            train = cls(root, train=True, download=True)
            test = cls(root, train=False, download=True)
        except Exception as e:  # no network and no files: say where to put them
            raise UsageError(
                f"{tv_name} not found in {root} and download failed ({type(e).__name__}); "
                f"put {files} in {root}/ or pass --data-dir") from None
        return from_arrays(cfg.dataset, train.data, train.targets, test.data, test.targets, flip=True)

    return load


# Registry: dataset name -> loader(cfg) -> ArrayDataset
DATASETS: dict[str, Callable] = {
    "cifar10": _torchvision_loader("CIFAR10", "cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/)"),
    "cifar100": _torchvision_loader("CIFAR100", "cifar-100-python.tar.gz (or its extracted cifar-100-python/)"),
    "digits": load_digits_dataset,
    "npz": load_npz_dataset,
}


def load_dataset(cfg) -> ArrayDataset:
    """Load cfg.dataset, restricted to the first cfg.pool_size training images if set."""
    if cfg.dataset not in DATASETS:
        raise UsageError(f"unknown dataset '{cfg.dataset}'; valid: {', '.join(DATASETS)}")
    ds = DATASETS[cfg.dataset](cfg)
    if cfg.pool_size is not None:
        if cfg.pool_size > len(ds.x_train):
            raise UsageError(f"--pool-size {cfg.pool_size} exceeds the {len(ds.x_train)} training images of {cfg.dataset}")
        ds.x_train, ds.y_train = ds.x_train[: cfg.pool_size], ds.y_train[: cfg.pool_size]
    return ds
