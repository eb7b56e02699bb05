"""Adversarial objectives, written on the discriminator's raw outputs (logits or critic values).

Each loss returns ``(d_loss, g_loss)`` pieces as functions of ``d_real [B]`` and ``d_fake [B]``:

- ``non_saturating`` (Goodfellow et al. 2014, the -log D trick for G):
  D minimises softplus(-d_real) + softplus(d_fake); G minimises softplus(-d_fake).
- ``hinge`` (Lim & Ye 2017; Miyato et al. 2018):
  D minimises relu(1 - d_real) + relu(1 + d_fake); G minimises -d_fake.
- ``wgan_gp`` (Gulrajani et al. 2017): the critic minimises d_fake - d_real + lambda * GP; G minimises -d_fake.
  GP = mean_i (||grad_x D(x_hat_i)||_2 - 1)^2 with x_hat_i = eps_i x_i + (1 - eps_i) x~_i, eps_i ~ U[0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LOSSES = ("non_saturating", "hinge", "wgan_gp")


def discriminator_loss(kind: str, d_real: jax.Array, d_fake: jax.Array) -> jax.Array:
    """The discriminator's loss without the gradient penalty, averaged over the batch."""
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-d_real)) + jnp.mean(jax.nn.softplus(d_fake))
    if kind == "hinge":
        return jnp.mean(jax.nn.relu(1.0 - d_real)) + jnp.mean(jax.nn.relu(1.0 + d_fake))
    if kind == "wgan_gp":
        return jnp.mean(d_fake) - jnp.mean(d_real)
    raise ValueError(f"unknown GAN loss {kind!r}: expected one of {LOSSES}")


def generator_loss(kind: str, d_fake: jax.Array) -> jax.Array:
    if kind == "non_saturating":
        return jnp.mean(jax.nn.softplus(-d_fake))
    if kind in ("hinge", "wgan_gp"):
        return -jnp.mean(d_fake)
    raise ValueError(f"unknown GAN loss {kind!r}: expected one of {LOSSES}")


def gradient_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     key: jax.Array) -> jax.Array:
    """WGAN-GP's penalty: mean over the batch of (||d critic / d x at x_hat||_2 - 1)^2.

    ``critic`` maps images ``[B, H, W, C]`` to ``[B]`` and must treat examples independently (no batch norm);
    ``x_hat`` interpolates each real/fake pair with its own eps ~ U[0, 1].
    """
    eps = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * fake
    # Summing over the batch gives every example its own gradient, since examples do not interact.
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
    return jnp.mean(jnp.square(norms - 1.0))
