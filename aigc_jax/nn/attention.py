"""Causal self-attention, with an optional hand-written backward pass for XLA:CPU.

`causal_attention(q, k, v)` is ``jax.nn.dot_product_attention(q, k, v, is_causal=True)`` for ``q, k, v [B, T, N, H]``
(batch, positions, heads, head width), returning ``[B, T, N, H]`` in ``q``'s dtype. On the CPU backend it is the
version below, computed in float32 whatever the inputs' dtype (the output is cast back to it); other backends call
`jax.nn.dot_product_attention` itself.

By default the CPU version is plain ``jax.numpy``, differentiable in every mode (``jax.grad``, ``jax.jvp``,
``jax.jacfwd``, hessians), and other backends ask for ``implementation="xla"`` (a fused kernel such as cuDNN's has
no forward-mode rule). Inside ``with reverse_mode_kernels():`` (`aigc_jax.nn.kernels`; the train step enters it
around its ``value_and_grad``) the CPU version carries a ``jax.custom_vjp`` over the same forward computation,
faster to train with and reverse mode only, and other backends let JAX choose the implementation. The VJP is the
softmax backward written out once: with ``P`` the attention weights and ``O`` the output,
``dS = P * (dP - rowsum(dO * O))``, the row sum taken over ``H`` instead of over the ``T x T`` scores (as in
FlashAttention's backward, Dao et al. 2022). Masked weights are exact zeros, so ``dS`` needs no mask.
Its speed against the automatic derivative of `jax.nn.dot_product_attention` is measured in benchmarks/README.md
(``python benchmarks/attention_cpu.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aigc_jax.nn.kernels import reverse_mode_kernels_enabled


def _heads_first(x):  # [B, T, N, H] <-> [B, N, T, H]
    return x.transpose(0, 2, 1, 3)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, backend: str | None = None) -> jax.Array:
    """Causal softmax attention ``q, k, v [B, T, N, H] -> [B, T, N, H]`` (``q``'s dtype), scaled by ``1/sqrt(H)``.

    ``backend`` (default ``jax.default_backend()``) picks the implementation: ``"cpu"``, the float32 version of this
    module; anything else, `jax.nn.dot_product_attention`. Naming it lets a test run either path on one machine.
    Whether the hand-written VJP is used is decided by `reverse_mode_kernels` (see the module docstring).
    """
    fast = reverse_mode_kernels_enabled()
    if (backend or jax.default_backend()) != "cpu":
        # jax.nn.dot_product_attention promotes bfloat16 with float32 internally: its own code needs the standard
        # promotion rules when a caller (the test suite) runs with strict ones.
        with jax.numpy_dtype_promotion("standard"):
            return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=None if fast else "xla")
    f32 = jnp.float32
    attention = attention_reverse_mode if fast else _attention_plain
    return attention(q.astype(f32), k.astype(f32), v.astype(f32)).astype(q.dtype)


def _forward(q, k, v):
    t, h = q.shape[1], q.shape[3]
    qh, kh, vh = _heads_first(q), _heads_first(k), _heads_first(v)  # [B, N, T, H]
    s = jnp.einsum("bnth,bnsh->bnts", qh, kh) * (1.0 / math.sqrt(h))  # [B, N, T, T]
    causal = jnp.arange(t)[:, None] >= jnp.arange(t)[None, :]
    s = jnp.where(causal, s, -jnp.inf)  # the diagonal is always kept, so every row has a finite maximum
    # The shift by the row maximum leaves the softmax unchanged, so it has no derivative (stop_gradient does not
    # change the values).
    p = jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True)))
    p = p * (1.0 / p.sum(-1, keepdims=True))
    oh = jnp.einsum("bnts,bnsh->bnth", p, vh)
    return oh, (qh, kh, vh, p, oh)


def _attention_plain(q, k, v):
    return _heads_first(_forward(q, k, v)[0])


@jax.custom_vjp
def attention_reverse_mode(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The CPU version for float32 ``q, k, v [B, T, N, H]`` with the hand-written VJP (reverse mode only)."""
    return _attention_plain(q, k, v)


def _fwd(q, k, v):
    oh, res = _forward(q, k, v)
    return _heads_first(oh), res


def _bwd(res, do):
    qh, kh, vh, p, oh = res
    doh = _heads_first(do)
    dv = jnp.einsum("bnts,bnth->bnsh", p, doh)
    dp = jnp.einsum("bnth,bnsh->bnts", doh, vh)
    ds = p * (dp - (doh * oh).sum(-1, keepdims=True)) * (1.0 / math.sqrt(qh.shape[-1]))
    dq = jnp.einsum("bnts,bnsh->bnth", ds, kh)
    dk = jnp.einsum("bnts,bnth->bnsh", ds, qh)
    return _heads_first(dq), _heads_first(dk), _heads_first(dv)


attention_reverse_mode.defvjp(_fwd, _bwd)
