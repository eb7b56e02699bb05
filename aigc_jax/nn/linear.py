"""Matrix products ``x @ w`` with an optional hand-written backward pass.

`dense(x, w)` is ``x @ w`` for ``x [..., K]`` and ``w [K, M]``, returning ``[..., M]`` in ``x``'s dtype: ``w`` is
cast to it (so a float32 master weight serves bfloat16 activations) and products accumulate in float32.

By default it is that product written in plain ``jax.numpy``, differentiable in every mode (``jax.grad``,
``jax.jvp``, ``jax.jacfwd``, hessians). Inside ``with reverse_mode_kernels():`` (`aigc_jax.nn.kernels`; the train
step enters it around its ``value_and_grad``) the same forward computation carries a ``jax.custom_vjp`` that is
faster to train with on XLA:CPU (jaxlib 0.10) and supports reverse mode only. Its backward returns the weight
gradient in ``w``'s dtype, computed as one explicit ``[K, N] @ [N, M]`` product, for two reasons:

- float32: the automatic transpose of a chain of these products fuses the transposed copy of the weight-gradient
  operand with the whole elementwise backward of the residual stream (LayerNorm, GELU, adds) into slow loop
  fusions; the explicit product avoids them.
- bfloat16: a ``bf16 x bf16 -> f32`` product runs faster than float32 (AMX/AVX512-BF16) only when both operands are
  row-major and untransposed; a transposed operand (``x.T @ dy``, ``dy @ w.T``) falls back to a path slower than
  float32. On CPU the backward products therefore read physically transposed copies of ``x`` and ``w``
  (`row_major_transpose`; ``w`` is transposed in float32, which XLA:CPU copies faster than bfloat16); on other
  backends the transposes stay free layout changes. ``x`` is transposed batch element by batch element
  (`batch_blocked_transpose`) so that an ``x`` sharded on its leading (batch) axis stays sharded: flattening the
  whole transpose made XLA all-gather the batch on every device and compute the full weight gradient twice.

The timings behind both are in benchmarks/README.md.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from aigc_jax.nn.kernels import reverse_mode_kernels_enabled


def row_major_transpose(a: jax.Array) -> jax.Array:
    """``a.T`` for a 2-D array, materialised in row-major order. XLA folds a plain transpose into the consuming dot
    (or into the operand's layout); flattening it behind an optimisation barrier forces the copy."""
    rows, cols = a.shape
    return jax.lax.optimization_barrier(a.T.reshape(-1)).reshape(cols, rows)


def batch_blocked_transpose(x: jax.Array) -> jax.Array:
    """``x.reshape(-1, K).T`` for ``x [B, ..., K]`` (3-D or more), materialised in row-major order without
    flattening across the leading axis: each ``[..., K]`` block is transposed behind an optimisation barrier, then
    the ``[K, R]`` blocks are laid side by side (a copy of contiguous rows of length R). Sharding on B survives."""
    b, k = x.shape[0], x.shape[-1]
    blocks = jax.lax.optimization_barrier(jnp.swapaxes(x.reshape(b, -1, k), 1, 2).reshape(b, -1))
    return blocks.reshape(b, k, -1).transpose(1, 0, 2).reshape(k, -1)


def _matmul(a, b):
    return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _product(x, w, out_dtype=None):
    return _matmul(x, w.astype(x.dtype)).astype(out_dtype or x.dtype)


def dense(x: jax.Array, w: jax.Array, *, out_dtype=None, backend: str | None = None) -> jax.Array:
    """``x [..., K] @ w [K, M] -> [..., M]`` in ``out_dtype`` (default ``x``'s dtype), accumulated in float32.

    ``out_dtype=jnp.float32`` with bfloat16 ``x``: the float32 sums themselves, not rounded to bfloat16 (e.g. a
    model's output layer); the backward rounds the incoming gradient to ``x``'s dtype for its products.

    Plain ``jax.numpy`` (every transformation) unless traced inside `reverse_mode_kernels`, where it is
    `dense_reverse_mode` for ``backend`` (default ``jax.default_backend()``). Both give the same values.
    """
    out_dtype = None if out_dtype is None else jnp.dtype(out_dtype)
    if not reverse_mode_kernels_enabled():
        return _product(x, w, out_dtype)
    return dense_reverse_mode(x, w, backend or jax.default_backend(), out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def dense_reverse_mode(x: jax.Array, w: jax.Array, backend: str, out_dtype=None) -> jax.Array:
    """`dense` with the hand-written VJP (reverse mode only) whose backward suits ``backend`` (``"cpu"``: the
    physically transposed bfloat16 operands; anything else: plain transposes). The name is an argument so that a
    test on one machine runs either backward."""
    return _product(x, w, out_dtype)


def _dense_fwd(x, w, backend, out_dtype):
    return dense_reverse_mode(x, w, backend, out_dtype), (x, w)


def _dense_bwd(backend, out_dtype, res, dy):
    x, w = res
    dy = dy.astype(x.dtype)  # the products run in x's dtype
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    if x.dtype == jnp.bfloat16 and backend == "cpu":
        xt = batch_blocked_transpose(x) if x.ndim > 2 else row_major_transpose(x2)
        dw = _matmul(xt, dy2)
        dx = _matmul(dy2, row_major_transpose(w).astype(x.dtype)).reshape(x.shape)
    else:
        dw = _matmul(x2.T, dy2)
        dx = _matmul(dy, w.T.astype(x.dtype))
    return dx.astype(x.dtype), dw.astype(w.dtype)


dense_reverse_mode.defvjp(_dense_fwd, _dense_bwd)


def add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    """``y [..., M] + b [M]`` in ``y``'s dtype (``b`` cast to it).

    Plain ``jax.numpy`` unless traced inside `reverse_mode_kernels`, where a hand-written VJP returns the bias
    gradient (in ``b``'s dtype) as a product with a vector of ones, ``1 [R] @ dy [R, M]`` accumulated in float32:
    XLA:CPU rewrites the plain column sum over a batch into a reduce-window that ran several times slower than
    this product (benchmarks/README.md, "Fast by default"). The same values up to the order of the sum.
    """
    if not reverse_mode_kernels_enabled():
        return y + b.astype(y.dtype).reshape((1,) * (y.ndim - 1) + b.shape)
    return add_bias_reverse_mode(y, b)


@jax.custom_vjp
def add_bias_reverse_mode(y: jax.Array, b: jax.Array) -> jax.Array:
    """`add_bias` with the hand-written VJP (reverse mode only)."""
    return y + b.astype(y.dtype).reshape((1,) * (y.ndim - 1) + b.shape)


def _add_bias_fwd(y, b):
    return add_bias_reverse_mode(y, b), b


def _add_bias_bwd(b, dy):
    dy2 = dy.reshape(-1, dy.shape[-1])
    db = _matmul(jnp.ones((1, dy2.shape[0]), dy.dtype), dy2).reshape(b.shape)
    return dy, db.astype(b.dtype)


add_bias_reverse_mode.defvjp(_add_bias_fwd, _add_bias_bwd)
