"""The hand-written VJPs in `aigc_jax.nn` against JAX's own derivatives of the same functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from aigc_jax.nn.attention import causal_attention
from aigc_jax.nn.linear import batch_blocked_transpose, dense, row_major_transpose


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
    x = jnp.arange(2 * 3 * 5 * 4.0).reshape(2, 3, 5, 4)
    np.testing.assert_array_equal(jax.jit(batch_blocked_transpose)(x), x.reshape(-1, 4).T)


def test_bf16_dense_backward_keeps_a_batch_sharded_input_sharded(devices):
    """Data parallel: the weight gradient is a per-device partial product plus an all-reduce, never an all-gather
    of the activations (the full-batch product on every device that a whole-array flatten led XLA to)."""
    mesh = jax.sharding.Mesh(np.array(devices[:2]), ("data",))
    x = jax.device_put(jnp.ones((4, 8, 16), jnp.bfloat16), jax.sharding.NamedSharding(mesh, P("data")))
    w = jax.device_put(jnp.ones((16, 24)), jax.sharding.NamedSharding(mesh, P()))
    grad = jax.jit(jax.grad(lambda x, w: dense(x, w).astype(jnp.float32).sum(), argnums=(0, 1)))
    hlo = grad.lower(x, w).compile().as_text()
    assert "all-gather" not in hlo and "all-reduce" in hlo
    dx, dw = grad(x, w)
    np.testing.assert_array_equal(dw, np.full((16, 24), 32.0))  # every weight sees 4 * 8 ones
    np.testing.assert_array_equal(np.asarray(dx, np.float32), np.full((4, 8, 16), 24.0))


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
