"""Matrix products with a hand-written backward pass.

`dense(x, w)` is ``x @ w`` for ``x [..., K]`` and ``w [K, M]``. Its VJP computes the weight gradient as one
explicit ``[K, N] @ [N, M]`` product. Under XLA:CPU (jaxlib 0.10) the automatic transpose of a chain of these
products fuses the transposed copy of the weight-gradient operand with the whole elementwise backward of the
residual stream (LayerNorm, GELU, adds) into loop fusions that ran 4-5 ms each for a 768x128 tensor; with this VJP a
4-layer GPT's gradient went from 86 ms to 51 ms on 2 cores, with the same numbers up to float rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    return jnp.matmul(x, w)


def _dense_fwd(x, w):
    return jnp.matmul(x, w), (x, w)


def _dense_bwd(res, dy):
    x, w = res
    x2 = x.reshape(-1, x.shape[-1])
    dy2 = dy.reshape(-1, dy.shape[-1])
    dw = jnp.matmul(x2.T, dy2).astype(w.dtype)
    dx = jnp.matmul(dy, w.T).astype(x.dtype)
    return dx, dw


dense.defvjp(_dense_fwd, _dense_bwd)
