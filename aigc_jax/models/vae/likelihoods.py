"""Observation models p(x | z) for images, parameterised by decoder logits, and the Gaussian pieces of the ELBO.

Every log-density is summed over pixels and returned per example (shape ``[B]``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

LOG_2PI = math.log(2 * math.pi)


def _sum_pixels(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(-1) if x.ndim > 1 else x


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """log Bernoulli(x; sigmoid(logits)) summed over pixels; x in {0, 1} (or [0, 1] for the cross-entropy)."""
    lp = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)
    return _sum_pixels(lp)


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
    lp = x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)
    return _sum_pixels(lp + continuous_bernoulli_log_norm(logits))


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
