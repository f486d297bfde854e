import numpy as np
import pytest
import torch

from data import DeviceData, load_dataset, split_test
from data.datasets import DIGITS_TRAIN, from_arrays
from utils.errors import UsageError


def test_digits_fixed_split(tiny_cfg):
    a, b = load_dataset(tiny_cfg), load_dataset(tiny_cfg)
    assert a.x_train.shape == (DIGITS_TRAIN, 1, 8, 8) and a.x_test.shape == (1797 - DIGITS_TRAIN, 1, 8, 8)
    assert a.x_train.dtype == np.uint8 and a.num_classes == 10 and not a.flip
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)


def test_validation_slice_is_disjoint_and_fixed(tiny_cfg):
    ds = load_dataset(tiny_cfg)
    val, test = split_test(ds, 0.2)
    assert len(set(val) & set(test)) == 0 and len(val) + len(test) == len(ds.x_test)
    np.testing.assert_array_equal(val, split_test(ds, 0.2)[0])


def test_npz_roundtrip_nhwc_and_nhw(tmp_path, tiny_cfg):
    rng = np.random.default_rng(0)
    f = tmp_path / "d.npz"
    np.savez(f, x_train=rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), y_train=rng.integers(0, 10, 20),
             x_test=rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), y_test=rng.integers(0, 10, 8))
    tiny_cfg.dataset, tiny_cfg.data_path = "npz", str(f)
    ds = load_dataset(tiny_cfg)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.flip and ds.pad == 4
    gray = from_arrays("g", np.zeros((4, 28, 28), np.uint8), [0, 1, 2, 3], np.zeros((2, 28, 28), np.uint8), [0, 1])
    assert gray.x_train.shape == (4, 1, 28, 28) and not gray.flip


@pytest.mark.parametrize("bad, needle", [
    (dict(x_train=np.zeros((4, 8, 8), np.float32)), "uint8"),
    (dict(y_train=np.zeros(3, np.int64)), "y_train"),
])
def test_npz_bad_arrays(tmp_path, tiny_cfg, bad, needle):
    arrays = dict(x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, np.int64),
                  x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.zeros(2, np.int64))
    arrays.update(bad)
    np.savez(tmp_path / "d.npz", **arrays)
    tiny_cfg.dataset, tiny_cfg.data_path = "npz", str(tmp_path / "d.npz")
    with pytest.raises(UsageError, match=needle):
        load_dataset(tiny_cfg)


def test_missing_and_corrupt_npz(tmp_path, tiny_cfg):
    tiny_cfg.dataset, tiny_cfg.data_path = "npz", str(tmp_path / "nope.npz")
    with pytest.raises(UsageError, match="does not exist"):
        load_dataset(tiny_cfg)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    tiny_cfg.data_path = str(tmp_path / "bad.npz")
    with pytest.raises(UsageError, match="cannot read"):
        load_dataset(tiny_cfg)


def test_cifar_without_network_says_where_to_put_files(tmp_path, tiny_cfg, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    tiny_cfg.dataset, tiny_cfg.data_dir = "cifar10", str(tmp_path / "cifar")
    with pytest.raises(UsageError, match="cifar-10-python.tar.gz"):
        load_dataset(tiny_cfg)


def _device_data(x, flip=True, pad=4):
    ds = from_arrays("t", x.transpose(0, 2, 3, 1), np.zeros(len(x), np.int64), x[:1].transpose(0, 2, 3, 1), [0])
    ds.flip = flip
    return DeviceData.build(ds.x_train, ds.y_train, ds, "cpu")


def test_augment_is_a_crop_of_the_padded_image_or_its_mirror():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 255, (64, 3, 8, 8), dtype=np.uint8)
    d = _device_data(x)
    out = d.augment(d.x, torch.Generator().manual_seed(0)).numpy()
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))  # pad = 8 // 8 = 1
    flips = 0
    for i in range(len(x)):
        crops = {(dy, dx, f): (padded[i, :, dy:dy + 8, dx:dx + 8][..., ::-1] if f else padded[i, :, dy:dy + 8, dx:dx + 8])
                 for dy in range(3) for dx in range(3) for f in (0, 1)}
        match = [k for k, v in crops.items() if np.array_equal(v, out[i])]
        assert match, f"image {i} is not a padded crop"
        flips += match[0][2]
    assert 10 < flips < 54  # flips happen about half the time


def test_training_batches_are_a_permutation_without_repeats():
    x = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1).repeat(8, 2).repeat(8, 3)
    d = _device_data(x, flip=False)
    d.pad = 0  # identity crop: recover which images were served
    d.mean, d.std = torch.zeros_like(d.mean), torch.ones_like(d.std)
    seen = torch.cat([xb[:, 0, 0, 0] for xb, _ in d.batches(32, torch.Generator().manual_seed(1))])
    vals = (seen * 255).round().long().tolist()
    assert len(vals) == 96 and len(set(vals)) == 96  # 3 full batches, last partial dropped, no repeats


def test_pool_statistics_once_per_dataset_equal_a_float64_reference():
    """Per-channel mean and unbiased std of the pool (chunked float64 sums), computed once: every
    DeviceData of the dataset (members, validation, test, pool) reuses the same numbers."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (5000, 8, 8, 3), dtype=np.uint8)  # NHWC, > one 4,096-image chunk
    ds = from_arrays("t", x, rng.integers(0, 10, 5000), x[:10], np.zeros(10, np.int64), flip=True)
    ref = x.transpose(0, 3, 1, 2).astype(np.float64) / 255
    mean, std = ds.pool_stats
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, ref.std(axis=(0, 2, 3), ddof=1), rtol=1e-6)
    ds.__dict__["pool_stats"] = (np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))  # cached value is used
    d = DeviceData.build(ds.x_train[:4], np.zeros(4, np.int64), ds, "cpu")
    assert d.mean.flatten().tolist() == [0.5] * 3 and d.std.flatten().tolist() == [0.25] * 3
