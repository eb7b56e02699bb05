"""Sample metrics through a real extractor: FID limits on MNIST, the reference-feature cache, `aigc-jax eval`."""

import json

import numpy as np
import pytest

from aigc_jax.cli import main
from aigc_jax.data import sources
from aigc_jax.metrics import distribution
from aigc_jax.metrics.features import get_extractor
from aigc_jax.metrics.sample_quality import reference_features


@pytest.fixture(scope="module")
def lenet():
    return get_extractor("lenet-mnist")


def test_fid_on_mnist_is_zero_for_itself_small_across_splits_large_for_noise(lenet):
    test = sources.get_source("mnist", "test").images[:2000].astype(np.float32) / 255
    train = sources.get_source("mnist", "train").images[:2000].astype(np.float32) / 255
    noise = np.random.default_rng(0).uniform(size=test.shape).astype(np.float32)
    a, b, c = (lenet(x)["features"] for x in (test, train, noise))
    assert abs(distribution.fid(a, a)) < 1e-6
    same_data, vs_noise = distribution.fid(a, b), distribution.fid(a, c)
    # Measured: 12.0 (two 2000-image sets of real digits; finite-sample bias) and 556.
    assert 0 < same_data < 20 and vs_noise > 20 * same_data
    kid_same, kid_noise = distribution.kid(a, b, subset_size=500)[0], distribution.kid(a, c, subset_size=500)[0]
    assert kid_same < 10 < 50 < kid_noise


def test_reference_features_are_cached_with_their_identity(lenet, tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_JAX_CACHE", str(tmp_path))
    src = sources.get_source("mnist", "test")
    first = reference_features(lenet, src, "mnist", "test", count=300, batch_size=128, progress=False)
    files = list(tmp_path.glob("ref_*.npz"))
    assert len(files) == 1 and first["count"] == 300 and first["extractor"] == lenet.id
    with np.load(files[0]) as z:
        assert str(z["extractor"]) == lenet.id and str(z["dataset"]) == "mnist" and int(z["count"]) == 300
        np.testing.assert_array_equal(z["features"], first["features"])
    again = reference_features(lenet, src, "mnist", "test", count=300, progress=False)
    assert again["cache"] == first["cache"]
    np.testing.assert_array_equal(again["features"], first["features"])
    other = reference_features(lenet, src, "mnist", "test", count=200, batch_size=128, progress=False)
    assert len(list(tmp_path.glob("ref_*.npz"))) == 2
    np.testing.assert_allclose(other["features"], first["features"][:200], rtol=1e-6)

    class Edited:  # the same name, split and count, one image changed (a data file edited in place)
        def __len__(self):
            return len(src)

        def __getitems__(self, idx):
            out = dict(src.__getitems__(idx))
            out["image"] = np.where(np.asarray(idx)[:, None, None, None] == 0, 255 - out["image"], out["image"])
            return out

    edited = reference_features(lenet, Edited(), "mnist", "test", count=300, batch_size=128, progress=False)
    assert edited["cache"] != first["cache"] and edited["data_sha256"] != first["data_sha256"]
    assert not np.allclose(edited["features"][0], first["features"][0])
    np.testing.assert_allclose(edited["features"][1:], first["features"][1:], rtol=1e-5, atol=1e-5)


def test_eval_cli_writes_sample_metrics_with_their_provenance(tmp_path, capsys):
    wd = tmp_path / "run"
    tiny = ["--steps", "2", "--set", "model.g_channels=8,4", "--set", "model.d_channels=4,8", "--set",
            "model.latent_dim=8", "--set", "data.batch_size=16", "--set", "train.num_eval_batches=1",
            "--set", "train.num_samples=10", "--no-progress"]
    assert main(["train", "cgan-mnist", "--workdir", str(wd), *tiny]) == 0
    assert main(["eval", str(wd), "--num-samples", "40", "--no-progress"]) == 0
    res = json.loads((wd / "eval.json").read_text())
    assert res["extractor"].startswith("lenet-mnist/v1/sha256:")
    assert {k: res["reference"][k] for k in ("dataset", "split", "count")} == {"dataset": "mnist", "split": "test",
                                                                                "count": 10000}
    assert len(res["reference"]["data_sha256"]) == 64
    assert res["num_samples"] == 40 and res["pr_count"] == 40 and res["sample_quantization"] == "uint8"
    for k in ("fid", "kid_mean", "kid_std", "is_mean", "real_is_mean", "precision", "recall", "label_accuracy"):
        assert np.isfinite(res[k]), k
    assert 9.0 < res["real_is_mean"] < 10.0  # the real test set under lenet-mnist (measured 9.72)
    assert 0.0 <= res["label_accuracy"] <= 1.0
    capsys.readouterr()
    assert main(["eval", str(wd), "--metrics", "fid,bogus", "--no-progress"]) == 2
    assert "bogus not available" in capsys.readouterr().err
    assert main(["eval", str(wd), "--metrics", "fid", "--inception-weights", "x.pth", "--no-progress"]) == 2
    assert "--inception-weights is for the inception-v3 extractor" in capsys.readouterr().err
    assert main(["eval", str(wd), "--metrics", "is", "--num-samples", "5", "--no-progress"]) == 2
    assert "is need at least 10 samples" in capsys.readouterr().err
    assert main(["eval", str(wd), "--metrics", "label_accuracy", "--extractor", "inception-v3", "--no-progress"]) == 2
    assert "label_accuracy needs a classifier of the dataset's classes (lenet-mnist)" in capsys.readouterr().err
