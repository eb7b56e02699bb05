"""Likelihood metrics: the model's own per-example eval metrics (e.g. -ELBO) and an importance-weighted NLL."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aigc_jax.data import sources
from aigc_jax.data.pipeline import EVAL_KEY, masked_sums
from aigc_jax.parallel import mesh as meshlib


def importance_weighted_nll(setup, state, k: int, split: str = "test", max_examples: int = 0, batch_size: int = 0,
                            seed: int = 0, progress: bool = True) -> dict:
    """Mean of -log p(x) estimated with ``k`` importance samples (Burda et al. 2016), in nats, over a split.

    The evaluation data transform is a fixed function of each example (see `aigc_jax.data.pipeline.eval_batches`),
    so the NLL and `aigc_jax.train.evaluate`'s -ELBO refer to the same binarized test images at any batch size.
    """
    cfg = setup.config
    model = setup.model
    src = sources.for_experiment(cfg, split)
    bs = batch_size or cfg.data.eval_batch_size

    def nll_sum(state, batch, mask, key):
        data_key, _ = jax.random.split(key)
        b = setup.transform(batch, data_key)
        lp = model.log_prob(state["params"], b, jax.random.fold_in(key, 1), num_samples=k)
        return jnp.sum(-lp * mask)

    fn = jax.jit(nll_sum, in_shardings=(setup.state_shardings, setup.batch_sharding, setup.batch_sharding,
                                        meshlib.replicated(setup.mesh)))
    total, count = masked_sums(lambda b, m, key: fn(state, b, m, key), src, bs, setup.batch_sharding,
                               jax.random.key(seed + EVAL_KEY), max_examples=max_examples,
                               progress=f"IWAE k={k}" if progress else "")
    nll = float(total) / count
    return {f"iwae{k}_nll": nll, "iwae_k": k, "iwae_examples": int(count),
            f"iwae{k}_bits_per_dim": nll / (math.log(2) * math.prod(getattr(cfg.model, "image_shape", (1,))))}
