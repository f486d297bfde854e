"""Dataset registry (DATASETS: a DatasetSpec per name). Every dataset loads to arrays (N, C, H, W) plus int64 labels: uint8 images, or
float32 feature vectors (tabular data) as [N, F, 1, 1], F features as the channels of a 1x1 image, so
the image pipeline carries them unchanged (ArrayDataset.feature_vectors; docs/datasets.md: file layouts).

- cifar10 / cifar100: torchvision, downloaded into --data-dir when the network allows.
- svhn: SVHN's train_32x32.mat / test_32x32.mat in --data-dir (torchvision downloads them when missing).
- cinic10: the CINIC-10 archive extracted into --data-dir/cinic10 (ImageFolder layout: train/, test/).
- purchase100 / texas100: the published preprocessed arrays (Shokri et al. 2017) under --data-dir.
- digits: scikit-learn's bundled 8x8 digits (1,797 images, no download). Fixed split: a permutation
  drawn with numpy seed 0; the first 1,297 images are the training split (the membership pool), the
  last 500 the test split. Pixel values 0..16 are scaled to 0..255.
- tabular: an embedded, seeded Purchase-like set (binary features, many classes; no download).
- npz: --data-path FILE with x_train, y_train, x_test, y_test (uint8 NHWC or NHW images, or feature
  vectors [N, F] of any numeric dtype; integer labels).

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
TABULAR_TEST = 0.2   # purchase100, texas100, tabular: the fraction of the records held out as the test split


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its loader and what is known of it before loading (the config's checks and defaults,
    --help, docs/datasets.md read these, never the dataset's name)."""
    loader: Callable[..., "ArrayDataset"]  # (cfg) -> ArrayDataset; UsageError naming the files when absent
    description: str
    source: str = ""  # where it comes from (paper, package, files)
    feature_vectors: bool | Callable[..., bool] = False  # tabular records [N, F, 1, 1], not images; or (cfg) -> bool
    embedded: bool = False  # shipped with the code or its packages: offline, nothing under --data-dir
    data_path: str = ""  # what --data-path must name, for a dataset read from it (refused without it); "": not read

    def holds_feature_vectors(self, cfg) -> bool:
        return bool(self.feature_vectors(cfg) if callable(self.feature_vectors) else self.feature_vectors)


@dataclass
class ArrayDataset:
    name: str
    x_train: np.ndarray  # uint8 [N, C, H, W]: the membership pool
    y_train: np.ndarray  # int64 [N]
    x_test: np.ndarray   # uint8 [M, C, H, W]: validation slice + test accuracy
    y_test: np.ndarray   # int64 [M]
    num_classes: int
    flip: bool           # horizontal flip is a label-preserving augmentation (not for digits)

    @property
    def feature_vectors(self) -> bool:
        """Tabular data ([N, F, 1, 1], uint8 or float32): no augmentation, one query view, no normalisation."""
        return self.x_train.shape[2:] == (1, 1)

    @cached_property
    def pool_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and (unbiased) std of the pool in [0, 1] units, float32 [C] each: the
        normalisation of every model of every configuration. Computed once per dataset, in float64
        sums over chunks (a float32 copy of the CIFAR-10 pool alone would be 600 MB).
        Feature vectors: mean 0 and std 1/255, so DeviceData.normalize's (x / 255 - mean) / std is the
        features as stored (to float32 rounding): mia_prune feeds Purchase/Texas's binary features raw,
        and standardising a rare binary feature would blow it up (one set in 10,000 rows becomes 100)."""
        if self.feature_vectors:
            return np.zeros(self.in_channels, np.float32), np.full(self.in_channels, 1 / 255, np.float32)
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
        """Random-crop padding: 4 pixels at 32x32 (the standard CIFAR recipe), 1 at 8x8; 0 for feature
        vectors (the crop is then the identity: tabular data has no augmentation)."""
        return 0 if self.feature_vectors else max(1, self.x_train.shape[2] // 8)


def _to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 2:  # feature vectors [N, F] -> [N, F, 1, 1]: uint8 kept (binary features, a quarter of float32)
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise UsageError(f"{what} must be numeric feature vectors, got dtype {x.dtype}")
        return np.ascontiguousarray(x, dtype=np.uint8 if x.dtype == np.uint8 else np.float32)[:, :, None, None]
    if x.dtype != np.uint8:
        raise UsageError(f"{what} must be uint8 images or [N, F] feature vectors, got dtype {x.dtype}")
    if x.ndim == 3:  # NHW grayscale
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4):  # NHWC
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    raise UsageError(f"{what} must be NHWC or NHW uint8 images or [N, F] feature vectors, got shape {x.shape}")


def _labels(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if not np.issubdtype(y.dtype, np.integer) or len(y) != n:
        raise UsageError(f"{what} must be {n} integer labels, got dtype {y.dtype} shape {y.shape}")
    return y.astype(np.int64)


def from_arrays(name: str, x_train, y_train, x_test, y_test, flip: bool | None = None) -> ArrayDataset:
    xtr, xte = _to_nchw(np.asarray(x_train), "x_train"), _to_nchw(np.asarray(x_test), "x_test")
    ytr, yte = _labels(y_train, len(xtr), "y_train"), _labels(y_test, len(xte), "y_test")
    if xtr.shape[1:] != xte.shape[1:]:
        raise UsageError(f"x_train and x_test shapes differ: {xtr.shape[1:]} vs {xte.shape[1:]}")
    if min(ytr.min(), yte.min()) < 0:
        raise UsageError("labels must be non-negative integers")
    num_classes = int(max(ytr.max(), yte.max())) + 1
    if flip is None:  # colour images flip, like CIFAR; grayscale (digits, MNIST-like) and feature vectors do not
        flip = xtr.shape[1] == 3 and xtr.shape[2:] != (1, 1)
    return ArrayDataset(name, xtr, ytr, xte, yte, num_classes, flip)


def load_digits_dataset(cfg) -> ArrayDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # [1797, 8, 8]
    return fixed_split("digits", x, d.target, DIGITS_TRAIN, flip=False)


def fixed_split(name: str, x: np.ndarray, y: np.ndarray, n_train: int, flip: bool | None = None) -> ArrayDataset:
    """A dataset published as one set of records: a permutation drawn with numpy seed 0, its first n_train
    records the training split (the pool), the rest the test split."""
    perm = np.random.RandomState(0).permutation(len(x))
    tr, te = perm[:n_train], perm[n_train:]
    return from_arrays(name, x[tr], y[tr], x[te], y[te], flip=flip)


# -- tabular data (feature vectors) ---------------------------------------------------------------------
TABULAR = dict(n_samples=2000, n_features=100, n_informative=50, n_redundant=0, n_classes=20,
               n_clusters_per_class=1, class_sep=2.0, flip_y=0.02, random_state=0)


def load_tabular_dataset(cfg) -> ArrayDataset:
    """Embedded Purchase-like feature vectors (docs/datasets.md): scikit-learn's make_classification with
    the TABULAR settings (2,000 records, 100 features, 20 classes, seeded), features binarised at 0 like
    Purchase-100's binary purchase records; 1,600 records form the pool, 400 the test split. Small and
    many-class, so an MLP overfits it and leaks clearly: the tests' and the quick tabular runs' data."""
    from sklearn.datasets import make_classification

    x, y = make_classification(**TABULAR)
    return fixed_split("tabular", (x > 0).astype(np.uint8), y, int(round((1 - TABULAR_TEST) * len(x))))


def _published_arrays(name: str, files: list[str], source: str, read: Callable) -> Callable:
    """A loader for a dataset published as text arrays (Shokri et al.'s Purchase-100 and Texas-100) in
    --data-dir/<name>/: read(paths) -> (binary features [N, F], labels 1..100), a fixed split of the records."""
    def load(cfg) -> ArrayDataset:
        root = Path(cfg.data_dir) / name
        found = [root / f for f in files]
        if not all(f.is_file() for f in found):
            raise UsageError(f"{name} not found: put {' and '.join(files)} (from {source}) in {root}/ or pass --data-dir")
        x, y = read(found)
        return fixed_split(name, x.astype(np.uint8), y.astype(np.int64) - 1, int(round((1 - TABULAR_TEST) * len(x))))

    return load


def _read_csv(path: Path) -> np.ndarray:
    import pandas as pd

    return pd.read_csv(path, header=None, dtype=np.int32).to_numpy()


def _read_purchase(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    rows = _read_csv(files[0])  # label (1..100), then 600 binary features
    return rows[:, 1:], rows[:, 0]


def _read_texas(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    return _read_csv(files[0]), _read_csv(files[1])[:, 0]  # feats: 6,169 binary features; labels: 1..100


# -- images ------------------------------------------------------------------------------------------------
def load_svhn_dataset(cfg) -> ArrayDataset:
    """SVHN's cropped digits (train 73,257 = the pool, test 26,032; the 'extra' split is not used), read from
    the published train_32x32.mat / test_32x32.mat in --data-dir as torchvision's SVHN does (X [32, 32, 3, N],
    label 10 = digit 0), without its checksum; torchvision downloads the files when they are missing.
    Not flipped: a mirrored digit is not that digit."""
    from scipy.io import loadmat

    root = Path(cfg.data_dir)
    arrays = []
    for split in ("train", "test"):
        f = root / f"{split}_32x32.mat"
        if not f.is_file():
            try:
                import torchvision

                torchvision.datasets.SVHN(root, split=split, download=True)
            except Exception as e:  # no network and no file: say where to put it
                raise UsageError(f"SVHN not found in {root} and download failed ({type(e).__name__}); put "
                                 f"train_32x32.mat and test_32x32.mat in {root}/ or pass --data-dir") from None
        m = loadmat(f)
        arrays += [m["X"].transpose(3, 0, 1, 2), m["y"].reshape(-1).astype(np.int64) % 10]
    return from_arrays("svhn", *arrays, flip=False)


def load_cinic10_dataset(cfg) -> ArrayDataset:
    """CINIC-10 (Darlow et al. 2018): its archive extracted into --data-dir/cinic10, the ImageFolder layout
    train/<class>/*.png (90,000: the pool) and test/<class>/*.png (90,000); valid/ is not used. Read with
    torchvision's ImageFolder (classes in sorted order); 32x32 colour images, flipped like CIFAR."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.data_dir) / "cinic10"
    if not all((root / split).is_dir() for split in ("train", "test")):
        raise UsageError(f"CINIC-10 not found in {root}: extract CINIC-10.tar.gz there (train/ and test/ of class "
                         f"folders; https://datashare.ed.ac.uk/handle/10283/3192) or pass --data-dir")
    arrays = []
    for split in ("train", "test"):
        folder = ImageFolder(root / split)
        arrays += [np.stack([np.asarray(folder.loader(p).convert("RGB")) for p, _ in folder.samples]),
                   np.asarray(folder.targets)]
    return from_arrays("cinic10", *arrays, flip=True)


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


def _npz_holds_features(cfg) -> bool:
    """Whether --data-path's x_train is 2-D (feature vectors), from its .npy header alone (no array loaded);
    False when unreadable (the loader then names the problem)."""
    import zipfile

    try:
        with zipfile.ZipFile(cfg.data_path) as z, z.open("x_train.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return len(read(f)[0]) == 2
    except Exception:
        return False



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


# Registry: dataset name -> DatasetSpec (docs/datasets.md: files, sizes, arrays)
DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(_torchvision_loader("CIFAR10", "cifar-10-python.tar.gz (or its extracted cifar-10-batches-py/)"),
                           "CIFAR-10: 32x32 colour images, 10 classes", "torchvision, downloaded into --data-dir"),
    "cifar100": DatasetSpec(_torchvision_loader("CIFAR100", "cifar-100-python.tar.gz (or its extracted cifar-100-python/)"),
                            "CIFAR-100: 32x32 colour images, 100 classes", "torchvision, downloaded into --data-dir"),
    "svhn": DatasetSpec(load_svhn_dataset, "SVHN cropped digits, 32x32 colour, not flipped",
                        "Netzer et al. 2011; train_32x32.mat, test_32x32.mat in --data-dir"),
    "cinic10": DatasetSpec(load_cinic10_dataset, "CINIC-10: 32x32 colour images, 10 classes",
                           "Darlow et al. 2018; its archive extracted into --data-dir/cinic10"),
    "purchase100": DatasetSpec(_published_arrays("purchase100", ["dataset_purchase"], "dataset_purchase.tgz", _read_purchase),
                               "Purchase-100: 600 binary features, 100 classes",
                               "Shokri et al. 2017; --data-dir/purchase100/dataset_purchase", feature_vectors=True),
    "texas100": DatasetSpec(_published_arrays("texas100", ["feats", "labels"], "dataset_texas.tgz: texas/100/", _read_texas),
                            "Texas-100: 6,169 binary features, 100 classes",
                            "Shokri et al. 2017; --data-dir/texas100/feats and labels", feature_vectors=True),
    "digits": DatasetSpec(load_digits_dataset, "8x8 grayscale digits, 10 classes, 1,297 / 500",
                          "scikit-learn's bundled load_digits", embedded=True),
    "tabular": DatasetSpec(load_tabular_dataset, "Purchase-like binary feature vectors, 20 classes, 1,600 / 400",
                           "scikit-learn's make_classification, seeded (TABULAR)", feature_vectors=True, embedded=True),
    "npz": DatasetSpec(load_npz_dataset, "your arrays x_train, y_train, x_test, y_test", "--data-path FILE.npz",
                       feature_vectors=_npz_holds_features, data_path="FILE.npz (x_train, y_train, x_test, y_test)"),
}


def check_dataset(cfg) -> None:
    """A known dataset, with the file it needs: one line naming the problem."""
    spec = DATASETS.get(cfg.dataset)
    if spec is None:
        raise UsageError(f"unknown dataset '{cfg.dataset}'; valid: {', '.join(DATASETS)}")
    if spec.data_path and not cfg.data_path:
        raise UsageError(f"--dataset {cfg.dataset} needs --data-path {spec.data_path}")


def holds_feature_vectors(cfg) -> bool:
    """Whether cfg.dataset is tabular, known before loading it (config.py derives --mia-queries from it):
    its spec's `feature_vectors` (for npz, read from the file's header); an unknown dataset: images."""
    spec = DATASETS.get(cfg.dataset)
    return spec.holds_feature_vectors(cfg) if spec else False


def load_dataset(cfg) -> ArrayDataset:
    """Load cfg.dataset, restricted to the first cfg.pool_size training images and to cfg.test_size test
    images (a fixed draw, seed 0) if set."""
    check_dataset(cfg)
    ds = DATASETS[cfg.dataset].loader(cfg)
    if cfg.pool_size is not None:
        if cfg.pool_size > len(ds.x_train):
            raise UsageError(f"--pool-size {cfg.pool_size} exceeds the {len(ds.x_train)} training images of {cfg.dataset}")
        ds.x_train, ds.y_train = ds.x_train[: cfg.pool_size], ds.y_train[: cfg.pool_size]
    if getattr(cfg, "test_size", None) is not None:
        if cfg.test_size > len(ds.x_test):
            raise UsageError(f"--test-size {cfg.test_size} exceeds the {len(ds.x_test)} test images of {cfg.dataset}")
        # a fixed random draw, not the first N: some test splits are ordered by class (REFERENCE's JPEG copy)
        keep = np.sort(np.random.RandomState(0).permutation(len(ds.x_test))[: cfg.test_size])
        ds.x_test, ds.y_test = ds.x_test[keep], ds.y_test[keep]
    return ds
