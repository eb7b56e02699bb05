"""The hand-written VJPs in `aigc_jax.nn` against JAX's own derivatives of the same functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.nn.attention import causal_attention
from aigc_jax.nn.linear import dense, row_major_transpose


def _qkvd(dtype, shape=(3, 10, 2, 8)):
    return [jax.random.normal(k, shape, jnp.float32).astype(dtype) for k in jax.random.split(jax.random.key(0), 4)]


def test_causal_attention_equals_dot_product_attention_values_and_gradients():
    q, k, v, do = _qkvd(jnp.float32)
    ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    out, vjp = jax.vjp(causal_attention, q, k, v)
    out_ref, vjp_ref = jax.vjp(ref, q, k, v)
    np.testing.assert_allclose(out, out_ref, atol=2e-6)
    for g, g_ref in zip(vjp(do), vjp_ref(do), strict=True):
        np.testing.assert_allclose(g, g_ref, atol=1e-5)
    # causal: the output at t ignores keys and values after t (exactly)
    moved = causal_attention(q, k.at[:, 6:].add(3.0), v.at[:, 6:].add(3.0))
    np.testing.assert_array_equal(moved[:, :6], out[:, :6])


def test_causal_attention_in_bfloat16_is_computed_in_float32():
    q, k, v, do = _qkvd(jnp.bfloat16)
    out, vjp = jax.vjp(causal_attention, q, k, v)
    assert out.dtype == jnp.bfloat16 and all(g.dtype == jnp.bfloat16 for g in vjp(do))
    f32 = [a.astype(jnp.float32) for a in (q, k, v)]
    ref = jax.nn.dot_product_attention(*f32, is_causal=True).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(ref, np.float32))


def test_row_major_transpose_is_the_transpose():
    a = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(jax.jit(row_major_transpose)(a), a.T)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dense_gradients_equal_autodiff_of_the_same_product(dtype):
    """bf16 takes the physically-transposed backward on CPU; both dtypes accumulate in float32."""
    x = jax.random.normal(jax.random.key(1), (2, 5, 16)).astype(dtype)
    w = jax.random.normal(jax.random.key(2), (16, 24)).astype(dtype)
    dy = jax.random.normal(jax.random.key(3), (2, 5, 24)).astype(dtype)
    ref = lambda x, w: jnp.matmul(x, w, preferred_element_type=jnp.float32).astype(dtype)  # noqa: E731
    out, vjp = jax.jit(lambda x, w: jax.vjp(dense, x, w))(x, w)
    out_ref, vjp_ref = jax.vjp(ref, x, w)
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(out_ref, np.float32))
    tol = 1e-5 if dtype == jnp.float32 else 1e-2  # one bfloat16 rounding of results of magnitude ~5
    for g, g_ref in zip(jax.jit(vjp)(dy), vjp_ref(dy), strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(g_ref, np.float32), rtol=tol, atol=tol * 5)
