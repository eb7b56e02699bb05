"""An exponential moving average of parameters (a pytree), with the usual warm-up of its decay.

``average <- decay * average + (1 - decay) * params`` after each update. A GAN samples from the average of its
generator's weights (Yazici et al. 2019, "The Unusual Effectiveness of Averaging in GAN Training"); the warm-up
``min(decay, (1 + t) / (10 + t))`` after the t-th update keeps the average of a few updates from being dominated by
the initial weights (the ``num_updates`` warm-up of TensorFlow's ``ExponentialMovingAverage``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def ema_update(average, params, decay: jax.Array | float):
    """``decay * average + (1 - decay) * params``, leaf by leaf, for two pytrees of one structure."""
    return jax.tree.map(lambda a, p: decay * a + (1.0 - decay) * p, average, params)


def ema_warmup_decay(decay: float, t: jax.Array) -> jax.Array:
    """The decay for the ``t``-th update (``t = 1`` for the first): ``min(decay, (1 + t) / (10 + t))``, float32."""
    tf = jnp.asarray(t).astype(jnp.float32)  # the promotion the formula implies, made explicit
    return jnp.minimum(decay, (1.0 + tf) / (10.0 + tf)).astype(jnp.float32)
