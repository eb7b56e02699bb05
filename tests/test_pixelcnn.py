"""Gated PixelCNN: the autoregressive property and the absence of a blind spot, both by exact gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.models.autoregressive import PixelCNN, PixelCNNConfig

H = W = 8


@pytest.fixture(scope="module")
def net():
    cfg = PixelCNNConfig(image_shape=(H, W, 1), layers=3, channels=8, head_channels=16, kernel=3, num_classes=3)
    model = PixelCNN(cfg)
    params, _ = model.init(jax.random.key(0))
    x = (jax.random.uniform(jax.random.key(1), (1, H, W, 1)) > 0.5).astype(jnp.float32)
    grad = jax.jit(jax.grad(lambda x, i, j: model.logits(params, x, jnp.array([1]))[0, i, j, 0]))
    return model, params, x, grad


def _deps(grad, x, i, j):
    return np.asarray(grad(x, i, j)[0, :, :, 0] != 0)


@pytest.mark.parametrize("i, j", [(0, 0), (0, 5), (3, 0), (4, 4), (7, 7)])
def test_output_never_depends_on_current_or_later_pixels(net, i, j):
    _, _, x, grad = net
    d = _deps(grad, x, i, j)
    order = np.arange(H)[:, None] * W + np.arange(W)[None, :]
    assert not d[order >= i * W + j].any()  # exactly zero gradient: pixel i*W+j and everything after it
    if (i, j) != (0, 0):
        assert d[order < i * W + j].any()


def test_no_blind_spot(net):
    """With 3 layers of kernel 3 the output at (4, 4) sees every pixel of rows 1..3 in columns 1..7 (the vertical
    stack's cone, including the above-right pixels a plain masked stack cannot reach) and (4, 1..3) to its left."""
    _, _, x, grad = net
    d = _deps(grad, x, 4, 4)
    assert d[1:4, 1:8].all()
    assert d[4, 1:4].all()
    # Above-right pixels specifically: a stack of masked 3x3 convolutions never reaches (3, 6) or (2, 7) from (4, 4).
    assert d[3, 6] and d[2, 7]


def test_labels_condition_the_logits(net):
    model, params, x, _ = net
    a = model.logits(params, x, jnp.array([0]))
    b = model.logits(params, x, jnp.array([2]))
    assert not np.allclose(a, b)


def test_log_prob_is_the_sum_of_per_pixel_bernoulli_terms(net):
    model, params, x, _ = net
    lg = np.asarray(model.logits(params, x, jnp.array([1])), np.float64)
    p = 1 / (1 + np.exp(-lg))
    xv = np.asarray(x, np.float64)
    expected = np.sum(xv * np.log(p) + (1 - xv) * np.log(1 - p))
    got = float(model.log_prob(params, {"image": x, "label": jnp.array([1])})[0])
    assert got == pytest.approx(expected, rel=1e-5)


def test_sampling_draws_each_pixel_from_the_models_own_conditional(net):
    """Pixel i of a sample is the Bernoulli draw ``uniform(fold_in(key, i)) < sigmoid(logit_i)``, where the logit is
    the model's at that pixel given the pixels before it; by causality the logits of the finished image are the
    ones the sampler saw, so every bit is predicted exactly."""
    model, params, _, _ = net
    key = jax.random.key(5)
    labels = jnp.array([0, 1, 2])
    img = np.asarray(jax.jit(lambda k: model.sample(params, k, 3, label=labels))(key))
    assert set(np.unique(img).tolist()) <= {0.0, 1.0} and img.shape == (3, H, W, 1)
    probs = np.asarray(jax.nn.sigmoid(model.logits(params, jnp.asarray(img), labels)))
    for i in range(H * W):
        r, c = divmod(i, W)
        u = np.asarray(jax.random.uniform(jax.random.fold_in(key, i), (3, 1)))
        np.testing.assert_array_equal(img[:, r, c, :], (u < probs[:, r, c, :]).astype(np.float32))
    assert 0.0 < img.mean() < 1.0
