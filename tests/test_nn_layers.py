"""The shared small layers of `aigc_jax.nn`: dropout, im2col patches, convolution as a matmul, moving averages.

Each replaced a copy in a model file; the tests hold them to the formulas they replaced (exactly) and to the maths
(convolution, the closed form of a moving average).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aigc_jax.nn import ParamKeys, conv_as_matmul, dropout, ema_update, ema_warmup_decay, patches
from tests.helpers import tree_equal

# -- dropout --------------------------------------------------------------------------------------------------


def _gpt_dropout_before(x, rate, key):  # the copy that lived in models/autoregressive/gpt.py
    if rate == 0.0 or key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def _pix2pix_dropout_before(h, rate, key):  # the copy that lived in models/gan/pix2pix.py
    if rate == 0.0:
        return h
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), 0.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dropout_equals_the_copies_it_replaced(dtype):
    x = jax.random.normal(jax.random.key(0), (4, 6, 8)).astype(dtype)
    key = jax.random.key(1)
    out = jax.jit(dropout, static_argnums=1)(x, 0.3, key)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out, np.float32),
                                  np.asarray(jax.jit(_gpt_dropout_before, static_argnums=1)(x, 0.3, key), np.float32))
    if dtype == jnp.float32:
        np.testing.assert_array_equal(out, jax.jit(_pix2pix_dropout_before, static_argnums=1)(x, 0.3, key))


def test_dropout_is_the_identity_at_rate_zero_or_without_a_key_and_keeps_the_mean():
    x = jnp.ones((1000, 100))
    assert dropout(x, 0.0, jax.random.key(0)) is x and dropout(x, 0.5, None) is x
    out = np.asarray(dropout(x, 0.25, jax.random.key(0)))
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}
    np.testing.assert_allclose((out == 0).mean(), 0.25, atol=0.005)  # 1e5 draws: std 0.0014
    np.testing.assert_allclose(out.mean(), 1.0, atol=0.01)


# -- patches and convolution as a matmul ----------------------------------------------------------------------


def _pixelcnn_patches_before(x, kh, kw):  # from models/autoregressive/pixelcnn.py Conv.__call__
    _, hp, wp, _ = x.shape
    h, w = hp - kh + 1, wp - kw + 1
    if kh == kw == 1:
        return x
    return jnp.concatenate([x[:, dy:dy + h, dx:dx + w, :] for dy in range(kh) for dx in range(kw)], axis=-1)


def _conv_patches_before(xp, kh, kw, sh, sw):  # from nn/layers.py conv_as_matmul
    _, h, w, _ = xp.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = [xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, axis=-1)


@pytest.mark.parametrize("kh, kw, strides", [(1, 1, (1, 1)), (3, 3, (1, 1)), (2, 5, (1, 1)), (1, 3, (1, 1)),
                                             (4, 4, (2, 2)), (3, 2, (1, 2)), (1, 1, (2, 2))])
def test_patches_equal_the_copies_they_replaced_and_give_the_convolution(kh, kw, strides):
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    out = patches(x, kh, kw, strides)
    ho, wo = (9 - kh) // strides[0] + 1, (8 - kw) // strides[1] + 1
    assert out.shape == (2, ho, wo, kh * kw * 3)
    np.testing.assert_array_equal(out, _conv_patches_before(x, kh, kw, *strides))
    if strides == (1, 1):
        np.testing.assert_array_equal(out, _pixelcnn_patches_before(x, kh, kw))
    kernel = jax.random.normal(jax.random.key(1), (kh, kw, 3, 5))  # HWIO: the (i, j, c) order of the patches
    conv = jax.lax.conv_general_dilated(x, kernel, strides, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(out @ kernel.reshape(-1, 5), conv, atol=1e-5)


def _conv_as_matmul_before(conv, x):  # the implementation before `patches` was factored out (explicit padding)
    kh, kw = conv.kernel_size
    sh, sw = (conv.strides, conv.strides) if isinstance(conv.strides, int) else conv.strides
    (pt, pb), (pl, pr) = conv.padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kernel = conv.kernel[...]
    y = _conv_patches_before(xp, kh, kw, sh, sw) @ kernel.reshape(-1, kernel.shape[-1])
    return y + conv.bias[...].reshape(1, 1, 1, -1)


@pytest.mark.parametrize("conv", [dict(kernel_size=(4, 4), strides=2, padding=((1, 1), (1, 1))),
                                  dict(kernel_size=(3, 2), strides=(1, 2), padding=((0, 0), (0, 0))),
                                  dict(kernel_size=(3, 3), strides=1, padding=((2, 1), (0, 1)))])
def test_conv_as_matmul_is_unchanged_by_the_shared_patches(conv):
    layer = nnx.Conv(3, 5, rngs=nnx.Rngs(0), **conv)
    x = jax.random.normal(jax.random.key(1), (2, 9, 8, 3))
    np.testing.assert_array_equal(conv_as_matmul(layer, x), _conv_as_matmul_before(layer, x))


# -- exponential moving average -------------------------------------------------------------------------------


def test_ema_of_constant_params_has_the_closed_form():
    """From a_0, n updates towards constant p with constant decay d: a_n = d^n a_0 + (1 - d^n) p."""
    a0 = {"w": jnp.array([1.0, -2.0, 4.0]), "b": jnp.array(3.0)}
    p = {"w": jnp.array([0.5, 0.0, -1.0]), "b": jnp.array(-1.0)}
    d, n = 0.9, 25
    avg = a0
    for _ in range(n):
        avg = ema_update(avg, p, jnp.float32(d))
    for leaf, x0, pp in zip(jax.tree.leaves(avg), jax.tree.leaves(a0), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(leaf, d ** n * np.asarray(x0) + (1 - d ** n) * np.asarray(pp), rtol=1e-5,
                                   atol=1e-6)


def test_ema_warmup_decay_equals_the_formula_it_replaced():
    t = jnp.arange(1, 20_000, dtype=jnp.int32)
    for decay in (0.999, 0.9, 0.5):
        with jax.numpy_dtype_promotion("standard"):  # GANModel.after_update's formula, inline (int32 + float)
            before = jnp.minimum(decay, (1.0 + t) / (10.0 + t)).astype(jnp.float32)
        out = ema_warmup_decay(decay, t)
        assert out.dtype == jnp.float32
        np.testing.assert_array_equal(out, before)
    np.testing.assert_allclose(ema_warmup_decay(0.999, jnp.int32(1)), 2 / 11)  # the first update: mostly params
    assert float(ema_warmup_decay(0.999, jnp.int32(100_000))) == np.float32(0.999)


class _Layers(nnx.Module):
    """One of each parameter-drawing layer the models use."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.conv = nnx.Conv(2, 3, (3, 3), rngs=rngs)
        self.embed = nnx.Embed(5, 4, rngs=rngs)
        self.norm = nnx.GroupNorm(4, num_groups=2, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(3)])


def test_param_keys_build_the_same_parameters_as_nnx_rngs_and_trace_no_counter():
    """Layers built with `ParamKeys(key)` have exactly the parameters of the same layers built with
    `nnx.Rngs(key)` (from a key and from an int seed); the trace has no counter updates."""

    def params(key, cls):
        return nnx.to_pure_dict(nnx.state(_Layers(cls(key)), nnx.Param))

    key = jax.random.key(5)
    a = jax.jit(lambda k: params(k, nnx.Rngs))(key)
    b = jax.jit(lambda k: params(k, ParamKeys))(key)
    assert len(jax.tree.leaves(a)) == 13 and tree_equal(a, b)
    assert not tree_equal(a, jax.jit(lambda k: params(k, ParamKeys))(jax.random.key(6)))
    assert tree_equal(jax.jit(lambda: params(3, nnx.Rngs))(), jax.jit(lambda: params(3, ParamKeys))())
    counters = jax.make_jaxpr(lambda k: params(k, nnx.Rngs))(key).eqns
    assert len(jax.make_jaxpr(lambda k: params(k, ParamKeys))(key).eqns) < len(counters)
