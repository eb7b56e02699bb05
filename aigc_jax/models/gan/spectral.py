"""Spectral normalisation (Miyato et al. 2018) over a plain params pytree.

Every weight matrix ``W`` (a Linear or Conv ``kernel``, an ``embedding``) is divided by an estimate of its largest
singular value sigma(W). The estimate comes from power iteration on ``W`` viewed as a ``[fan_in, fan_out]`` matrix,
with one persistent vector ``u [fan_out]`` per weight: each training forward pass runs ``n`` iterations

    v <- normalise(W u),   u <- normalise(W^T v),   sigma = v^T W u

and keeps the new ``u`` as non-trainable state (it is not differentiated through, as in the paper). The vectors
live in a flat dict keyed by the weight's path, so the state is a plain pytree that checkpoints with the rest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SN_LEAVES = ("kernel", "embedding")


def _name(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _is_sn_leaf(path, leaf) -> bool:
    last = path[-1]
    return getattr(last, "key", None) in SN_LEAVES and leaf.ndim >= 2


def _normalise(x: jax.Array) -> jax.Array:
    return x / (jnp.linalg.norm(x) + 1e-12)


def init_vectors(params, key: jax.Array) -> dict[str, jax.Array]:
    """One random unit vector ``u [fan_out]`` per normalised weight, keyed by its path."""
    leaves = [(p, x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0] if _is_sn_leaf(p, x)]
    keys = jax.random.split(key, max(len(leaves), 1))
    return {_name(p): _normalise(jax.random.normal(k, (x.shape[-1],), jnp.float32)) for (p, x), k in
            zip(leaves, keys, strict=False)}


def power_iteration(w: jax.Array, u: jax.Array, n: int = 1) -> tuple[jax.Array, jax.Array]:
    """``(sigma, u)`` after ``n`` power iterations on ``w`` viewed as ``[fan_in, fan_out]``; no gradient flows
    into ``u``, while ``sigma = v^T W u`` is differentiable in ``w``."""
    if n < 1:
        raise ValueError(f"power iteration needs n >= 1, got {n}")
    m = w.reshape(-1, w.shape[-1])
    u = jax.lax.stop_gradient(u)
    mm = jax.lax.stop_gradient(m)
    for _ in range(n):
        v = _normalise(mm @ u)
        u = _normalise(mm.T @ v)
    sigma = v @ (m @ u)
    return sigma, u


def normalise(params, vectors: dict[str, jax.Array], n: int = 1, update: bool = True):
    """``(params with every SN weight divided by sigma, new vectors)``; with ``update=False`` the vectors are used
    as they are (one matrix-vector product, no iteration) and returned unchanged."""
    new = dict(vectors)

    def fix(path, x):
        if not _is_sn_leaf(path, x):
            return x
        name = _name(path)
        if update:
            sigma, new[name] = power_iteration(x, vectors[name], n)
        else:
            m = x.reshape(-1, x.shape[-1])
            u = jax.lax.stop_gradient(vectors[name])
            v = jax.lax.stop_gradient(_normalise(m @ u))
            sigma = v @ (m @ u)
        return x / sigma

    out = jax.tree_util.tree_map_with_path(fix, params)
    return out, new
