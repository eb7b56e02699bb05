"""Likelihood metrics from a model's declared likelihood: -log p(x) in nats over a split, and bits per dimension.

This is the one place where bits per dimension are computed (`aigc_jax.core.contract.bits_per_dim` over the
declared ``spec.data_dims``), and only from a `Likelihood`'s ``log_prob``, never from a training loss.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aigc_jax.core.contract import LatentVariable, Likelihood, bits_per_dim
from aigc_jax.core.errors import UserError
from aigc_jax.data import sources
from aigc_jax.data.pipeline import EVAL_KEY, masked_sums
from aigc_jax.parallel import mesh as meshlib


def likelihood_metrics(setup, state, split: str = "test", max_examples: int = 0, batch_size: int = 0,
                       seed: int = 0, importance_samples: int = 0, progress: bool = True) -> dict:
    """Mean ``-log p(x)`` over a split from ``model.log_prob``, in nats per example, and per dimension in bits.

    Keys: a `LatentVariable` model's estimate is importance-weighted with k samples (Burda et al. 2016; k =
    ``importance_samples`` or the model's ``iwae_samples``): ``iwae{k}_nll``, ``iwae{k}_bits_per_dim``, ``iwae_k``,
    ``iwae_examples``. An exact likelihood gives ``{split}_nll`` and ``{split}_bits_per_dim`` (images) or
    ``{split}_nll_per_token``, ``{split}_bits_per_token`` and ``{split}_perplexity`` (token models), and
    ``{split}_nll_examples``.

    The evaluation data transform is a fixed function of each example (see `aigc_jax.data.pipeline.eval_batches`),
    so these and `aigc_jax.train.loop.evaluate`'s metrics refer to the same (binarized) test data at any batch size.
    """
    model = setup.model
    if not isinstance(model, Likelihood):
        raise UserError(f"{setup.config.name} declares no likelihood")
    spec = model.spec
    latent = isinstance(model, LatentVariable)
    k = importance_samples or (model.iwae_samples if latent else 0)
    if importance_samples and not latent:
        raise UserError(f"importance samples: {setup.config.name}'s likelihood is exact (no latent variables)")
    cfg = setup.config
    src = sources.for_experiment(cfg, split, spec)
    # An importance-weighted estimate decodes k samples per example: at most 200 examples a batch.
    bs = batch_size or (min(cfg.data.eval_batch_size, 200) if latent else cfg.data.eval_batch_size)

    def nll_sum(state, batch, mask, key):
        data_key, _ = jax.random.split(key)
        b = setup.transform(batch, data_key)
        options = {"num_samples": k} if latent else {}
        lp = model.log_prob(state["params"], b, jax.random.fold_in(key, 1), **options)
        return jnp.sum(-lp * mask)

    fn = jax.jit(nll_sum, in_shardings=(setup.state_shardings, setup.batch_sharding, setup.batch_sharding,
                                        meshlib.replicated(setup.mesh)))
    desc = (f"IWAE k={k}" if latent else "log-likelihood") if progress else ""
    total, count = masked_sums(lambda b, m, key: fn(state, b, m, key), src, bs, setup.batch_sharding,
                               jax.random.key(seed + EVAL_KEY), max_examples=max_examples, progress=desc)
    nll = float(total) / count
    if latent:
        return {f"iwae{k}_nll": nll, "iwae_k": k, "iwae_examples": int(count),
                f"iwae{k}_bits_per_dim": bits_per_dim(nll, spec.data_dims)}
    if spec.output == "tokens":
        per_token = nll / spec.data_dims
        return {f"{split}_nll_per_token": per_token, f"{split}_bits_per_token": bits_per_dim(nll, spec.data_dims),
                f"{split}_perplexity": math.exp(per_token), f"{split}_nll_examples": int(count)}
    return {f"{split}_nll": nll, f"{split}_bits_per_dim": bits_per_dim(nll, spec.data_dims),
            f"{split}_nll_examples": int(count)}
