"""The shipped lenet-mnist extractor: accuracy of its weights, the hash pin, batch-size independence, input checks."""

import hashlib
import re

import numpy as np
import pytest

from aigc_jax.core.errors import UserError
from aigc_jax.data.sources import load_mnist
from aigc_jax.metrics import lenet
from aigc_jax.metrics.features import get_extractor


@pytest.fixture(scope="module")
def extractor():
    return get_extractor("lenet-mnist")


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist("test")


def test_the_id_pins_the_shipped_weights_bytes(extractor):
    """The id (which every FID/IS result records) names the sha256 of the weights file actually shipped, so two
    results with one id were computed with the same bytes."""
    digest = hashlib.sha256(lenet.WEIGHTS_PATH.read_bytes()).hexdigest()
    assert digest == lenet.SHA256
    assert extractor.id == f"lenet-mnist/{lenet.VERSION}/sha256:{digest[:12]}/resize:none"
    assert re.fullmatch(r"lenet-mnist/v\d+/sha256:[0-9a-f]{12}/resize:none", extractor.id)


def test_shipped_weights_accuracy(extractor, mnist_test):
    images = mnist_test.images.astype(np.float32) / 255.0
    out = extractor(images)
    assert out["features"].shape == (10000, 128) and out["features"].dtype == np.float32
    assert out["logits"].shape == (10000, 10) and out["logits"].dtype == np.float32
    assert np.isfinite(out["features"]).all() and (out["features"] >= 0).all()  # post-ReLU
    acc = float((out["logits"].argmax(-1) == mnist_test.labels).mean())
    assert acc >= 0.99, f"lenet-mnist test accuracy {acc:.4f} < 0.99"


def test_tampered_weights_are_refused(tmp_path):
    data = bytearray(lenet.WEIGHTS_PATH.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad = tmp_path / "lenet_mnist_v1.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256") as e:
        lenet.LeNetExtractor(weights=str(bad))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="cannot read"):
        lenet.LeNetExtractor(weights=str(tmp_path / "missing.npz"))


def test_an_untampered_copy_loads(tmp_path, extractor):
    copy = tmp_path / "copy.npz"
    copy.write_bytes(lenet.WEIGHTS_PATH.read_bytes())
    assert lenet.LeNetExtractor(weights=str(copy)).id == extractor.id


def test_batch_size_does_not_change_results(extractor, mnist_test):
    images = mnist_test.images[:37].astype(np.float32) / 255.0
    ref = extractor(images, batch_size=500)  # one padded batch
    # XLA:CPU picks its convolution kernels by batch shape, so float32 rounding may differ between batch sizes
    # (up to 1e-5 absolute on these features on some hosts); a padding or ordering bug would be far larger.
    for bs in (16, 37):  # several batches with a padded last one; exactly one batch
        out = extractor(images, batch_size=bs)
        for k in ("features", "logits"):
            np.testing.assert_allclose(out[k], ref[k], rtol=1e-5, atol=2e-5)
    one = extractor(images[:1], batch_size=16)
    np.testing.assert_allclose(one["logits"], ref["logits"][:1], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("shape", [(4, 28, 28), (4, 32, 32, 1), (4, 28, 28, 3), (28, 28, 1)])
def test_wrong_image_shape_is_a_user_error(extractor, shape):
    with pytest.raises(UserError, match=re.escape("[N, 28, 28, 1]")):
        extractor(np.zeros(shape, np.float32))
