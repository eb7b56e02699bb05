"""Token sampling for autoregressive models: temperature, top-k, top-p, and a decode loop inside one jit.

The loop is written against a step function ``step_fn(state, token [B], position) -> (logits [B, V], state)``
so that the same code drives a KV-cached transformer, a windowed recompute, or a fake logits function in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def filter_logits(logits: jax.Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Scale by 1/temperature, keep the logits at least as large as the ``top_k``-th largest (0: all; tokens tied
    with it are kept too, as in nanoGPT and Hugging Face) and the smallest set of tokens whose probability mass
    reaches ``top_p`` (the most likely token is always kept); the rest become -inf."""
    logits = logits.astype(jnp.float32) / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = mass_before < top_p
        keep = jnp.zeros_like(keep_sorted).at[
            jnp.arange(logits.shape[0])[:, None], order
        ].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def choose(logits: jax.Array, key: jax.Array, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0):
    """One token per row of ``logits [B, V]``; temperature 0 is greedy (argmax)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, filter_logits(logits, temperature, top_k, top_p), axis=-1).astype(jnp.int32)


def decode_loop(
    step_fn: Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]],
    state: Any,
    first_logits: jax.Array,
    start: int,
    num_new: int,
    key: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> jax.Array:
    """Sample ``num_new`` tokens: token i comes from the current logits, then ``step_fn`` consumes it at position
    ``start + i``. Returns int32 ``[B, num_new]``. A `lax.scan`, so the whole loop is one compiled program."""

    def body(carry, i):
        logits, st = carry
        tok = choose(logits, jax.random.fold_in(key, i), temperature, top_k, top_p)
        logits, st = step_fn(st, tok, start + i)
        return (logits, st), tok

    _, toks = jax.lax.scan(body, (first_logits, state), jnp.arange(num_new))
    return toks.T
