"""Observation models p(x | z) for images, parameterised by decoder logits, and the Gaussian pieces of the ELBO.

Every log-density is summed over pixels and returned per example (shape ``[B]``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2 * math.pi)


def _flat(x: jax.Array) -> jax.Array:
    """``[B, H, W, C] -> [B, H * W * C]`` (a free reshape). The pixel terms are computed on this view: XLA:CPU
    runs elementwise loops along the last axis, and a last axis of size 1 (grey images) leaves them unvectorised,
    several times slower (measured in benchmarks/README.md, "Fast by default")."""
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x


@jax.custom_jvp
def _softplus(logits: jax.Array) -> jax.Array:
    """log(1 + e^l) = max(l, 0) + log1p(e^-|l|): the same values as ``jax.nn.softplus``, in fewer operations. Its
    derivative is sigmoid(l) everywhere (differentiating the kinks of max and abs would give 0 at l = 0)."""
    return jnp.maximum(logits, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(logits)))


@_softplus.defjvp
def _softplus_jvp(primals, tangents):
    (logits,), (tangent,) = primals, tangents
    return _softplus(logits), jax.nn.sigmoid(logits) * tangent


def _cross_entropy_term(x: jax.Array, logits: jax.Array) -> jax.Array:
    """x log sigmoid(l) + (1 - x) log sigmoid(-l) = x l - softplus(l), elementwise (one softplus, not two)."""
    return x * logits - _softplus(logits)


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """log Bernoulli(x; sigmoid(logits)) summed over pixels; x in {0, 1} (or [0, 1] for the cross-entropy)."""
    lp = _cross_entropy_term(_flat(x), _flat(logits))
    return lp.sum(-1) if x.ndim > 1 else lp


def continuous_bernoulli_log_norm(logits: jax.Array) -> jax.Array:
    """log C(lambda) of the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), lambda = sigmoid(logits).

    C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda), which in logits is l / tanh(l / 2); near l = 0 we use the
    Taylor series log 2 + l^2 / 12 to avoid 0/0.
    """
    small = jnp.abs(logits) < 1e-3
    safe = jnp.where(small, 1.0, logits)
    exact = jnp.log(jnp.abs(safe)) - jnp.log(jnp.abs(jnp.tanh(safe / 2)))
    taylor = math.log(2.0) + logits**2 / 12.0
    return jnp.where(small, taylor, exact)


def continuous_bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """log CB(x; sigmoid(logits)) summed over pixels, for x in [0, 1]: a proper density on the unit interval."""
    flat_logits = _flat(logits)
    lp = _cross_entropy_term(_flat(x), flat_logits) + continuous_bernoulli_log_norm(flat_logits)
    return lp.sum(-1) if x.ndim > 1 else lp


def continuous_bernoulli_mean(logits: jax.Array) -> jax.Array:
    """E[x] under CB(sigmoid(logits)) = sigmoid(l) / tanh(l / 2) - 1 / l, with limit 1/2 + l/12 near l = 0."""
    small = jnp.abs(logits) < 1e-3
    safe = jnp.where(small, 1.0, logits)
    exact = jax.nn.sigmoid(safe) / jnp.tanh(safe / 2) - 1.0 / safe
    return jnp.where(small, 0.5 + logits / 12.0, exact)


LOG_PROBS = {"bernoulli": bernoulli_log_prob, "continuous_bernoulli": continuous_bernoulli_log_prob}
MEANS = {"bernoulli": jax.nn.sigmoid, "continuous_bernoulli": continuous_bernoulli_mean}


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) in closed form, summed over latents: ``[B, D] -> [B]``."""
    return 0.5 * jnp.sum(jnp.exp(logvar) + mean**2 - 1.0 - logvar, axis=-1)


def gaussian_log_prob(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mean, exp(logvar)) summed over the last axis."""
    return -0.5 * jnp.sum(LOG_2PI + logvar + (z - mean) ** 2 * jnp.exp(-logvar), axis=-1)


def standard_normal_log_prob(z: jax.Array) -> jax.Array:
    return -0.5 * jnp.sum(LOG_2PI + z**2, axis=-1)


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I) (Kingma & Welling 2013, sec. 2.4)."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
