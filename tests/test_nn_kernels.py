"""The kernels of `aigc_jax.nn` (`dense`, `causal_attention`) on every path, against plain-jnp references.

Each kernel has a plain path (the default: differentiable in every mode) and a hand-written VJP (inside
`reverse_mode_kernels`), and each branches on the backend. The backend is an argument, so every branch runs here
on the CPU: values and gradients of each against the reference, forward mode (``jax.jvp``, ``jax.jacfwd``) of the
plain path against the reference's, and identical forward values on both paths.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from aigc_jax.nn import add_bias, causal_attention, dense, reverse_mode_kernels, reverse_mode_kernels_enabled
from aigc_jax.nn.linear import batch_blocked_transpose, row_major_transpose

BACKENDS = ["cpu", "gpu"]  # "gpu": the branch every non-CPU backend takes
DTYPES = [jnp.float32, jnp.bfloat16]


def _switched(fn, on: bool):
    """``fn`` traced with the reverse-mode kernels switched on or off (inside the function, as the train step does,
    so that it holds while ``jax.vjp`` / ``jax.jit`` trace it)."""

    def wrapped(*args):
        with reverse_mode_kernels(on):
            return fn(*args)

    return wrapped


def _f32(a):
    return np.asarray(a, np.float32)


def _qkvd(dtype, shape=(3, 10, 2, 8)):
    return [jax.random.normal(k, shape, jnp.float32).astype(dtype) for k in jax.random.split(jax.random.key(0), 4)]


def naive_attention(q, k, v):
    """``softmax(Q K^T / sqrt(H) + mask) V`` per batch and head, in float32: q, k, v [B, T, N, H] -> [B, T, N, H]."""
    q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
    t, h = q.shape[1], q.shape[3]
    scores = jnp.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(h)
    mask = jnp.where(jnp.arange(t)[:, None] >= jnp.arange(t)[None, :], 0.0, -jnp.inf)  # [T, S]
    return jnp.einsum("bnts,bsnh->btnh", jax.nn.softmax(scores + mask[None, None], axis=-1), v)


def _promotion(backend, dtype):
    """`jax.nn.dot_product_attention` (jax 0.10) itself promotes bfloat16 with float32 implicitly, which the strict
    promotion of conftest.py rejects; its branch runs under standard promotion (our code runs strict)."""
    strict = backend == "cpu" or dtype == jnp.float32
    return jax.numpy_dtype_promotion("strict" if strict else "standard")


def _attention_tol(dtype, backend):
    if dtype == jnp.float32:
        return 2e-5
    # bfloat16: the CPU path rounds a float32 result once (2^-8 relative); dot_product_attention computes in bf16.
    return 1e-2 if backend == "cpu" else 4e-2


# -- the switch -------------------------------------------------------------------------------------------------

def test_the_switch_is_off_by_default_nests_and_restores():
    assert not reverse_mode_kernels_enabled()
    with reverse_mode_kernels():
        assert reverse_mode_kernels_enabled()
        with reverse_mode_kernels(False):
            assert not reverse_mode_kernels_enabled()
        assert reverse_mode_kernels_enabled()
    assert not reverse_mode_kernels_enabled()


def test_the_switch_selects_the_custom_vjp_and_is_part_of_the_jit_cache_key():
    x, w = jnp.ones((2, 4)), jnp.ones((4, 3))
    q = _qkvd(jnp.float32)[0]

    def f(x, w, q):
        return dense(x, w).sum() + causal_attention(q, q, q).sum()

    assert "custom_vjp_call" in str(jax.make_jaxpr(_switched(f, True))(x, w, q))
    assert "custom_vjp_call" not in str(jax.make_jaxpr(f)(x, w, q))
    jitted = jax.jit(f)
    with reverse_mode_kernels():
        jitted(x, w, q)  # traced (and cached) with the custom VJPs ...
    out, tangent = jax.jvp(jitted, (x, w, q), (x, w, q))  # ... yet forward mode outside retraces the plain path
    np.testing.assert_allclose(tangent, jax.jvp(f, (x, w, q), (x, w, q))[1], rtol=1e-6)


# -- causal attention -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_forward_values_are_identical_on_both_paths(backend, dtype):
    q, k, v, _ = _qkvd(dtype)
    fn = lambda q, k, v: causal_attention(q, k, v, backend=backend)  # noqa: E731
    with _promotion(backend, dtype):
        plain, custom = jax.jit(_switched(fn, False))(q, k, v), jax.jit(_switched(fn, True))(q, k, v)
        # eager (op by op; XLA may round differently from the jitted program, but both paths the same)
        eager = _switched(fn, False)(q, k, v), _switched(fn, True)(q, k, v)
    assert plain.dtype == custom.dtype == dtype
    np.testing.assert_array_equal(_f32(plain), _f32(custom))
    np.testing.assert_array_equal(_f32(eager[0]), _f32(eager[1]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse_mode", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_values_and_gradients_equal_the_naive_reference(backend, reverse_mode, dtype):
    q, k, v, do = _qkvd(dtype)
    fn = _switched(lambda q, k, v: causal_attention(q, k, v, backend=backend), reverse_mode)
    with _promotion(backend, dtype):
        out, vjp = jax.vjp(fn, q, k, v)
        grads = vjp(do)
        # causal: the output at t ignores keys and values after t (exactly)
        moved = fn(q, k.at[:, 6:].add(3.0), v.at[:, 6:].add(3.0))
    f32 = [a.astype(jnp.float32) for a in (q, k, v, do)]
    out_ref, vjp_ref = jax.vjp(naive_attention, *f32[:3])
    tol = _attention_tol(dtype, backend)
    np.testing.assert_allclose(_f32(out), out_ref, rtol=tol, atol=tol)
    for g, g_ref in zip(grads, vjp_ref(f32[3]), strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(_f32(g), g_ref, rtol=tol, atol=tol * 5)
    np.testing.assert_array_equal(_f32(moved[:, :6]), _f32(out[:, :6]))


def test_attention_in_bfloat16_on_cpu_is_computed_in_float32():
    q, k, v, _ = _qkvd(jnp.bfloat16)
    ref = jax.nn.dot_product_attention(*[a.astype(jnp.float32) for a in (q, k, v)], is_causal=True)
    for on in (False, True):
        out = _switched(causal_attention, on)(q, k, v)
        np.testing.assert_array_equal(_f32(out), _f32(ref.astype(jnp.bfloat16)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_forward_mode_equals_the_reference(backend):
    q, k, v, _ = _qkvd(jnp.float32, shape=(2, 5, 2, 4))
    tangents = _qkvd(jnp.float32, shape=(2, 5, 2, 4))[1:]
    fn = lambda q, k, v: causal_attention(q, k, v, backend=backend)  # noqa: E731
    out, tangent = jax.jvp(fn, (q, k, v), tuple(tangents))
    out_ref, tangent_ref = jax.jvp(naive_attention, (q, k, v), tuple(tangents))
    np.testing.assert_allclose(out, out_ref, atol=2e-6)
    np.testing.assert_allclose(tangent, tangent_ref, atol=2e-5)
    for jac, jac_ref in zip(jax.jacfwd(fn, argnums=(0, 1, 2))(q, k, v),
                            jax.jacfwd(naive_attention, argnums=(0, 1, 2))(q, k, v), strict=True):
        np.testing.assert_allclose(jac, jac_ref, atol=2e-5)
    # reverse and forward mode of the same function agree: the full Jacobian with respect to q
    np.testing.assert_allclose(jax.jacrev(fn)(q, k, v), jax.jacfwd(fn)(q, k, v), atol=2e-6)


def test_attention_hessian_vector_product_equals_the_reference():
    q, k, v, do = _qkvd(jnp.float32, shape=(1, 4, 1, 4))
    scalar = lambda f: lambda q: jnp.vdot(f(q, k, v), do)  # noqa: E731
    hvp = lambda f: jax.jvp(jax.grad(scalar(f)), (q,), (v,))[1]  # noqa: E731  forward over reverse
    np.testing.assert_allclose(hvp(causal_attention), hvp(naive_attention), atol=1e-5)


# -- dense ------------------------------------------------------------------------------------------------------

def _dense_args(dtype):
    x = jax.random.normal(jax.random.key(1), (2, 5, 16)).astype(dtype)
    w = jax.random.normal(jax.random.key(2), (16, 24)).astype(dtype)
    dy = jax.random.normal(jax.random.key(3), (2, 5, 24)).astype(dtype)
    return x, w, dy


def _matmul_ref(x, w):
    return jnp.matmul(x, w.astype(x.dtype), preferred_element_type=jnp.float32).astype(x.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_forward_values_are_identical_on_both_paths(backend, dtype):
    x, _, _ = _dense_args(dtype)
    w = jax.random.normal(jax.random.key(2), (16, 24))  # a float32 master weight, cast to x's dtype
    fn = lambda x, w: dense(x, w, backend=backend)  # noqa: E731
    plain, custom = jax.jit(_switched(fn, False))(x, w), jax.jit(_switched(fn, True))(x, w)
    assert plain.dtype == custom.dtype == dtype
    np.testing.assert_array_equal(_f32(plain), _f32(custom))
    np.testing.assert_array_equal(_f32(_switched(fn, False)(x, w)), _f32(_switched(fn, True)(x, w)))  # eager
    np.testing.assert_array_equal(_f32(plain), _f32(_matmul_ref(x, w)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse_mode", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_dense_gradients_equal_autodiff_of_the_same_product(backend, reverse_mode, dtype):
    """With the switch, bf16 on "cpu" takes the physically-transposed backward and "gpu" the plain transposes; all
    accumulate in float32."""
    x, w, dy = _dense_args(dtype)
    fn = _switched(lambda x, w: dense(x, w, backend=backend), reverse_mode)
    out, vjp = jax.jit(lambda x, w: jax.vjp(fn, x, w))(x, w)
    out_ref, vjp_ref = jax.vjp(lambda x, w: x.astype(jnp.float32) @ w.astype(jnp.float32), x, w)
    np.testing.assert_array_equal(_f32(out), _f32(_matmul_ref(x, w)))
    tol = 1e-5 if dtype == jnp.float32 else 1e-2  # one bfloat16 rounding of results of magnitude ~5
    for g, g_ref in zip(jax.jit(vjp)(dy), vjp_ref(dy.astype(jnp.float32)), strict=True):
        assert g.dtype == dtype
        np.testing.assert_allclose(_f32(g), _f32(g_ref), rtol=tol, atol=tol * 5)


def test_dense_weight_gradient_comes_back_in_the_weights_dtype():
    x, _, dy = _dense_args(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(2), (16, 24))
    for on in (False, True):
        dx, dw = jax.vjp(_switched(dense, on), x, w)[1](dy)
        assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32


@pytest.mark.parametrize("reverse_mode", [False, True])
def test_dense_float32_output_keeps_the_unrounded_sums(reverse_mode):
    """bfloat16 operands, ``out_dtype=float32``: the float32 accumulator itself (not rounded to bfloat16), and in
    reverse mode the gradients of the bfloat16 product taken with the incoming gradient rounded to bfloat16."""
    x, _, dy = _dense_args(jnp.bfloat16)
    w = jax.random.normal(jax.random.key(2), (16, 24))
    fn = _switched(lambda x, w: dense(x, w, out_dtype=jnp.float32, backend="cpu"), reverse_mode)
    out, vjp = jax.vjp(fn, x, w)
    want = jnp.matmul(x, w.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out), np.asarray(want))
    assert not np.array_equal(np.asarray(out), _f32(want.astype(jnp.bfloat16)))  # more bits than bfloat16 keeps
    dx, dw = vjp(dy.astype(jnp.float32))
    dx_ref, dw_ref = jax.vjp(_switched(lambda x, w: dense(x, w, backend="cpu"), reverse_mode), x, w)[1](dy)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.float32
    np.testing.assert_allclose(_f32(dx), _f32(dx_ref), rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(np.asarray(dw), np.asarray(dw_ref), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_mode_equals_the_reference(dtype):
    x, w, _ = _dense_args(dtype)
    tx, tw = jax.random.normal(jax.random.key(4), x.shape).astype(dtype), jnp.ones_like(w)
    out, tangent = jax.jvp(dense, (x, w), (tx, tw))
    out_ref, tangent_ref = jax.jvp(_matmul_ref, (x, w), (tx, tw))
    np.testing.assert_array_equal(_f32(out), _f32(out_ref))
    np.testing.assert_array_equal(_f32(tangent), _f32(tangent_ref))
    xs, ws = x[:1, :2, :3].astype(jnp.float32), w[:3, :4].astype(jnp.float32)
    for jac, jac_ref in zip(jax.jacfwd(dense, argnums=(0, 1))(xs, ws),
                            jax.jacfwd(lambda x, w: x @ w, argnums=(0, 1))(xs, ws), strict=True):
        np.testing.assert_allclose(jac, jac_ref, atol=1e-6)


# -- add_bias ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reverse_mode", [False, True])
def test_add_bias_values_and_gradients_equal_the_broadcast_sum(reverse_mode, dtype):
    """Both paths: ``y + b`` in y's dtype; the bias gradient (in b's float32) is dy summed over every leading axis,
    the input's gradient is dy itself. Forward mode through the plain path."""
    y = jax.random.normal(jax.random.key(1), (3, 5, 24)).astype(dtype)
    b = jax.random.normal(jax.random.key(2), (24,))  # a float32 master bias
    dy = jax.random.normal(jax.random.key(3), (3, 5, 24)).astype(dtype)
    out, vjp = jax.jit(lambda y, b: jax.vjp(_switched(add_bias, reverse_mode), y, b))(y, b)
    assert out.dtype == dtype
    np.testing.assert_array_equal(_f32(out), _f32(y + b.astype(dtype)[None, None]))
    dy_back, db = jax.jit(vjp)(dy)
    assert dy_back.dtype == dtype and db.dtype == jnp.float32
    np.testing.assert_array_equal(_f32(dy_back), _f32(dy))
    # The hand-written VJP accumulates in float32; autodiff of the plain path sums bfloat16 cotangents in bfloat16.
    tol = 1e-5 if reverse_mode or dtype == jnp.float32 else 5e-2
    np.testing.assert_allclose(np.asarray(db), _f32(dy).sum((0, 1)), rtol=tol, atol=tol)
    _, tangent = jax.jvp(add_bias, (y, b), (dy, jnp.ones_like(b)))
    np.testing.assert_array_equal(_f32(tangent), _f32(dy + jnp.ones((24,), dtype)[None, None]))


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
    loss = _switched(lambda x, w: dense(x, w, backend="cpu").astype(jnp.float32).sum(), True)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    hlo = grad.lower(x, w).compile().as_text()
    assert "all-gather" not in hlo and "all-reduce" in hlo
    dx, dw = grad(x, w)
    np.testing.assert_array_equal(dw, np.full((16, 24), 32.0))  # every weight sees 4 * 8 ones
    np.testing.assert_array_equal(_f32(dx), np.full((4, 8, 16), 24.0))
