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


# -- the datasets of issue 21: each on-disk format as a tiny synthetic copy written here ----------------------

def _one_line_usage_error(fn, needle):
    with pytest.raises(UsageError, match=needle) as e:
        fn()
    assert "\n" not in str(e.value)


def test_svhn_reads_the_published_mat_files(tmp_path, tiny_cfg):
    """train_32x32.mat / test_32x32.mat: X uint8 [32, 32, 3, N], y [N, 1] with 10 for the digit 0."""
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 5), ("test", 3)):
        savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                                  "y": np.array([[10], [1], [2], [9], [10]][:n], np.uint8)})
    tiny_cfg.dataset, tiny_cfg.data_dir = "svhn", str(tmp_path)
    ds = load_dataset(tiny_cfg)
    raw = __import__("scipy.io").io.loadmat(tmp_path / "train_32x32.mat")["X"]
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.x_train.dtype == np.uint8 and ds.x_test.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train[1], raw[:, :, :, 1].transpose(2, 0, 1))  # image 1, channels first
    assert ds.y_train.tolist() == [0, 1, 2, 9, 0] and ds.y_train.dtype == np.int64
    assert not ds.flip and ds.pad == 4 and not ds.feature_vectors


def test_svhn_offline_says_where_to_put_files(tmp_path, tiny_cfg, monkeypatch):
    import torchvision

    def offline(*a, **k):
        raise RuntimeError("Error downloading train_32x32.mat")

    monkeypatch.setattr(torchvision.datasets, "SVHN", offline)
    tiny_cfg.dataset, tiny_cfg.data_dir = "svhn", str(tmp_path)
    _one_line_usage_error(lambda: load_dataset(tiny_cfg), "train_32x32.mat and test_32x32.mat in")


def test_cinic10_reads_its_imagefolder_layout(tmp_path, tiny_cfg):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = {}
    for split in ("train", "test", "valid"):
        for c in ("cat", "airplane"):  # ImageFolder numbers classes in sorted order: airplane 0, cat 1
            (tmp_path / "cinic10" / split / c).mkdir(parents=True)
            for i in range(2):
                pixels[split, c, i] = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels[split, c, i]).save(tmp_path / "cinic10" / split / c / f"{c}_{i}.png")
    tiny_cfg.dataset, tiny_cfg.data_dir = "cinic10", str(tmp_path)
    ds = load_dataset(tiny_cfg)
    assert ds.x_train.shape == (4, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32) and ds.x_train.dtype == np.uint8
    assert ds.y_train.tolist() == [0, 0, 1, 1] and ds.num_classes == 2 and ds.flip
    np.testing.assert_array_equal(ds.x_train[2], pixels["train", "cat", 0].transpose(2, 0, 1))  # PNG is lossless


def test_cinic10_missing_says_where_to_extract_it(tmp_path, tiny_cfg):
    tiny_cfg.dataset, tiny_cfg.data_dir = "cinic10", str(tmp_path)
    _one_line_usage_error(lambda: load_dataset(tiny_cfg), "extract CINIC-10.tar.gz there")


def _write_purchase(root, x, y):
    (root / "purchase100").mkdir()
    np.savetxt(root / "purchase100" / "dataset_purchase", np.column_stack([y, x]), fmt="%d", delimiter=",")


def _write_texas(root, x, y):
    (root / "texas100").mkdir()
    np.savetxt(root / "texas100" / "feats", x, fmt="%d", delimiter=",")
    np.savetxt(root / "texas100" / "labels", y, fmt="%d")


@pytest.mark.parametrize("name, write", [("purchase100", _write_purchase), ("texas100", _write_texas)])
def test_tabular_sets_read_the_published_arrays(name, write, tmp_path, tiny_cfg):
    """Binary features and labels 1..100 as published: uint8 [N, F, 1, 1] feature vectors, labels 0..99,
    a fixed 80/20 split of the records; no augmentation (pad 0, no flip), one query view."""
    rng = np.random.default_rng(0)
    x = (rng.random((10, 7)) < 0.4).astype(np.int64)
    y = np.array([1, 2, 3, 100, 1, 2, 3, 100, 5, 6])
    write(tmp_path, x, y)
    tiny_cfg.dataset, tiny_cfg.data_dir = name, str(tmp_path)
    ds = load_dataset(tiny_cfg)
    assert ds.x_train.shape == (8, 7, 1, 1) and ds.x_test.shape == (2, 7, 1, 1) and ds.x_train.dtype == np.uint8
    assert ds.feature_vectors and ds.pad == 0 and not ds.flip and ds.num_classes == 100
    perm = np.random.RandomState(0).permutation(10)  # data/datasets.fixed_split
    np.testing.assert_array_equal(ds.x_train[:, :, 0, 0], x[perm[:8]])
    assert ds.y_train.tolist() == (y[perm[:8]] - 1).tolist()
    assert tiny_cfg.resolved().mia_queries == 1


@pytest.mark.parametrize("name, files", [("purchase100", "dataset_purchase"), ("texas100", "feats and labels")])
def test_tabular_sets_missing_say_where_to_put_them(name, files, tmp_path, tiny_cfg):
    tiny_cfg.dataset, tiny_cfg.data_dir = name, str(tmp_path)
    _one_line_usage_error(lambda: load_dataset(tiny_cfg), f"put {files} .* in {tmp_path / name}/")


def test_npz_feature_vectors(tmp_path, tiny_cfg):
    """x_train [N, F] of any numeric dtype: float32 [N, F, 1, 1] (uint8 stays uint8); known to be feature
    vectors from the file's header, so --mia-queries defaults to 1 and 2 is refused in one line."""
    rng = np.random.default_rng(0)
    f = tmp_path / "t.npz"
    xtr = rng.normal(size=(6, 5))
    np.savez(f, x_train=xtr, y_train=np.arange(6) % 2, x_test=rng.normal(size=(3, 5)), y_test=[0, 1, 0])
    tiny_cfg.dataset, tiny_cfg.data_path = "npz", str(f)
    ds = load_dataset(tiny_cfg)
    assert ds.x_train.shape == (6, 5, 1, 1) and ds.x_train.dtype == np.float32 and ds.feature_vectors
    np.testing.assert_array_equal(ds.x_train[:, :, 0, 0], xtr.astype(np.float32))
    assert tiny_cfg.resolved().mia_queries == 1
    tiny_cfg.mia_queries = 2
    _one_line_usage_error(tiny_cfg.resolved, "feature vectors: one query view")
    images = from_arrays("i", np.zeros((2, 4, 4, 3), np.uint8), [0, 1], np.zeros((1, 4, 4, 3), np.uint8), [0])
    assert not images.feature_vectors
    tiny_cfg.mia_queries = None
    np.savez(f, x_train=np.zeros((2, 4, 4, 3), np.uint8), y_train=[0, 1], x_test=np.zeros((1, 4, 4, 3), np.uint8), y_test=[0])
    assert tiny_cfg.resolved().mia_queries == 2  # images: the default two views


def test_embedded_tabular_set(tiny_cfg):
    """Seeded and offline: 1,600 pool records and 400 test records, 100 binary features, 20 classes."""
    tiny_cfg.dataset = "tabular"
    a, b = load_dataset(tiny_cfg), load_dataset(tiny_cfg)
    assert a.x_train.shape == (1600, 100, 1, 1) and a.x_test.shape == (400, 100, 1, 1) and a.num_classes == 20
    assert set(np.unique(a.x_train)) == {0, 1} and a.x_train.dtype == np.uint8
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert 0.1 < a.x_train.mean() < 0.9 and np.bincount(a.y_train).min() > 50  # neither empty features nor classes


def test_feature_vectors_enter_the_model_as_stored_with_one_query_view():
    """No normalisation, no augmentation: every training batch and the signal pass see the records as they
    are; one query (the record itself) and a one-line error for more."""
    from training.signals import compute_logits

    rng = np.random.default_rng(0)
    x = (rng.random((6, 4)) < 0.5).astype(np.uint8)
    ds = from_arrays("t", x, np.arange(6) % 2, x[:2], [0, 1])
    data = DeviceData.build(ds.x_train, ds.y_train, ds, "cpu")
    gen = torch.Generator().manual_seed(0)
    seen = torch.cat([xb for xb, _ in data.batches(3, gen)])
    assert seen.shape == (6, 4, 1, 1)
    expected = torch.from_numpy(x).float()
    assert sorted(map(tuple, seen[:, :, 0, 0].tolist())) == sorted(map(tuple, expected.tolist()))
    torch.testing.assert_close(data.normalize(data.x)[:, :, 0, 0], expected, rtol=1e-6, atol=0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    assert compute_logits(model, data, 1, 2).shape == (6, 1, 2)
    _one_line_usage_error(lambda: compute_logits(model, data, 2, 2), "exceeds the 1 queries")
