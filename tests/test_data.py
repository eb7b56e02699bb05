"""Data sources, checksums, deterministic and checkpointable pipelines, dynamic binarization."""

import gzip
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.core.config import DataConfig
from aigc_jax.core.errors import UserError
from aigc_jax.data import embedded, sources
from aigc_jax.data.pipeline import EpochBatches, eval_batches, make_device_transform, train_iterator


def test_embedded_mnist_has_the_official_shapes_and_counts():
    train, test = sources.load_mnist("train"), sources.load_mnist("test")
    assert train.images.shape == (60000, 28, 28, 1) and test.images.shape == (10000, 28, 28, 1)
    assert train.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(test.labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def test_idx_folder_and_errors(tmp_path):
    root = embedded.data_root() / "mnist"
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(root / f"{name}.gz") as f:
            (tmp_path / name).write_bytes(f.read())  # uncompressed copies are accepted too
    src = sources.load_mnist("test", str(tmp_path))
    np.testing.assert_array_equal(src.images, sources.load_mnist("test").images)
    with pytest.raises(UserError, match="train-images-idx3-ubyte.*not found in"):
        sources.load_mnist("train", str(tmp_path))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x27\x10abc")
    with pytest.raises(UserError, match="truncated or corrupt"):
        sources.load_mnist("test", str(tmp_path))


def test_corrupt_or_missing_embedded_file_is_reported(tmp_path, monkeypatch):
    shutil.copytree(embedded.data_root(), tmp_path / "data")
    monkeypatch.setenv("AIGC_JAX_DATA", str(tmp_path / "data"))
    embedded.verified.cache_clear()
    embedded._sums.cache_clear()
    try:
        p = tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"
        raw = bytearray(p.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        p.write_bytes(bytes(raw))
        with pytest.raises(UserError, match="is corrupt: sha256 .* does not match SHA256SUMS"):
            sources.load_mnist("test")
        (tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
        with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz is missing"):
            sources.load_mnist("train")
    finally:
        embedded.verified.cache_clear()
        embedded._sums.cache_clear()


def test_npz_source(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(20), x_test=x[:5].astype(np.float32) / 255)
    tr, te = sources.get_source(str(tmp_path / "d.npz"), "train"), sources.get_source(str(tmp_path / "d.npz"), "test")
    np.testing.assert_array_equal(tr.images, x)
    np.testing.assert_array_equal(te.images, x[:5])
    assert te.labels.tolist() == [0] * 5
    np.savez(tmp_path / "bad.npz", images=x)
    with pytest.raises(UserError, match="no array 'x_train'"):
        sources.get_source(str(tmp_path / "bad.npz"), "train")
    with pytest.raises(UserError, match="unknown dataset 'cifar'"):
        sources.get_source("cifar", "train")


def test_epoch_batches_cover_each_epoch_once_and_are_deterministic():
    src = sources.ArraySource(np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1), np.arange(50, dtype=np.int32))
    eb = EpochBatches(src, 10, seed=3)
    epoch0 = np.concatenate([eb[i]["label"] for i in range(5)])
    epoch1 = np.concatenate([eb[i]["label"] for i in range(5, 10)])
    assert sorted(epoch0) == list(range(50)) and sorted(epoch1) == list(range(50))
    assert not np.array_equal(epoch0, epoch1)
    again = EpochBatches(src, 10, seed=3)
    np.testing.assert_array_equal(again[7]["label"], eb[7]["label"])
    # Two processes each read their half of every global batch; together they give the same batch.
    halves = [EpochBatches(src, 10, seed=3, rows=slice(i * 5, (i + 1) * 5))[7]["label"] for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), eb[7]["label"])


def test_iterator_state_resumes_mid_epoch():
    src = sources.load_mnist("test")
    cfg = DataConfig(batch_size=64, seed=5)
    it = train_iterator(src, cfg, 64)
    for _ in range(200):  # past an epoch boundary (156 batches)
        next(it)
    saved = it.get_state()
    expected = [next(it)["label"] for _ in range(3)]
    it2 = train_iterator(src, cfg, 64)
    it2.set_state(saved)
    got = [next(it2)["label"] for _ in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))


def test_eval_batches_pad_and_mask():
    src = sources.ArraySource(np.zeros((10, 1, 1, 1), np.uint8), np.arange(10, dtype=np.int32))
    out = list(eval_batches(src, 4, multiple_of=1))
    assert [m.sum() for _, m in out] == [4, 4, 2]
    assert out[-1][0]["label"].tolist() == [8, 9, 9, 9]
    assert out[-1][0]["index"].tolist() == [8, 9, 9, 9]
    out = list(eval_batches(src, 4, max_examples=5))  # the first 5 examples exactly
    assert [m.tolist() for _, m in out] == [[1, 1, 1, 1], [1, 0, 0, 0]]


def test_evaluation_binarization_is_a_fixed_function_of_the_example():
    rng = np.random.default_rng(0)
    src = sources.ArraySource(rng.integers(0, 256, (10, 6, 6, 1), dtype=np.uint8), np.arange(10, dtype=np.int32))
    t = jax.jit(make_device_transform(DataConfig(binarize="dynamic")))

    def binarized(batch_size, key):
        rows = [(np.asarray(t(b, key)["image"]), m) for b, m in eval_batches(src, batch_size)]
        return np.concatenate([x[m > 0] for x, m in rows])

    a = binarized(4, jax.random.key(1))
    np.testing.assert_array_equal(a, binarized(3, jax.random.key(2)))  # any batch size, any key
    assert set(np.unique(a)) == {0.0, 1.0} and a.shape == (10, 6, 6, 1)
    assert not np.array_equal(a[0], a[1])
    assert "index" not in t(next(eval_batches(src, 4))[0], jax.random.key(0))  # the model never sees it
    # Training batches (no index) draw afresh from the step's key.
    train = {"image": src.images[:4]}
    assert not np.array_equal(t(train, jax.random.key(1))["image"], t(train, jax.random.key(2))["image"])


def test_dynamic_binarization_is_bernoulli_of_intensity():
    t = make_device_transform(DataConfig(binarize="dynamic"))
    img = jnp.full((2000, 4, 4, 1), 64, jnp.uint8)
    a = t({"image": img}, jax.random.key(0))["image"]
    b = t({"image": img}, jax.random.key(1))["image"]
    assert set(np.unique(np.asarray(a))) <= {0.0, 1.0}
    assert float(a.mean()) == pytest.approx(64 / 255, abs=0.01)
    assert not np.array_equal(np.asarray(a), np.asarray(b))
    plain = make_device_transform(DataConfig(binarize="none"))({"image": img}, jax.random.key(0))["image"]
    assert float(plain[0, 0, 0, 0]) == pytest.approx(64 / 255)
    # The draws are jax.random.bernoulli's on the [B, H, W, C] images (computed on a flattened view).
    grey = jnp.asarray(np.random.default_rng(0).integers(0, 256, (5, 6, 7, 1)), jnp.uint8)
    key = jax.random.key(3)
    np.testing.assert_array_equal(
        np.asarray(t({"image": grey}, key)["image"]),
        np.asarray(jax.random.bernoulli(key, grey.astype(jnp.float32) / 255.0), np.float32))


def test_tfds_source_through_data_source_without_download():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=24):
        src = sources.get_source("tfds:mnist", "train")
        assert len(src) == 24 and src.image_shape == (28, 28, 1)
        batch = src.__getitems__(np.array([3, 0, 5]))
        assert batch["image"].shape == (3, 28, 28, 1) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32
        np.testing.assert_array_equal(batch["image"][1], src[0]["image"])
        it = train_iterator(src, DataConfig(name="tfds:mnist", batch_size=8), 8)
        assert next(it)["image"].shape == (8, 28, 28, 1)


def test_unprepared_tfds_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"tfds:mnist split 'train' is not available offline .*`tfds build mnist`"):
        sources.get_source("tfds:mnist", "train", str(tmp_path))
