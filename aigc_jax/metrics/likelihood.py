"""Likelihood metrics from a model's declared likelihood: -log p(x) in nats over a split, and bits per dimension.

This is the one place where bits per dimension are computed (`aigc_jax.core.contract.bits_per_dim` over the
declared ``spec.data_dims``), and only from a `Likelihood`'s ``log_prob``, never from a training loss.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from aigc_jax.core.contract import LatentVariable, Likelihood, TokenLikelihood, bits_per_dim
from aigc_jax.core.errors import UserError
from aigc_jax.data import sources
from aigc_jax.data.pipeline import EVAL_KEY, masked_sums
from aigc_jax.parallel import mesh as meshlib


def ensemble_log_prob(model, params, batch, key, latent_samples: int = 0) -> jax.Array:
    """The log-likelihood ``[B]`` of the uniform mixture of a population's members (``params`` with a leading
    member axis K): ``log (1/K) sum_i p_i(x)``, a log-mean-exp over members of each member's ``log p(x)`` (a VAE's
    importance-weighted estimate, a PixelCNN's exact one). A `TokenLikelihood` model mixes the members' next-token
    distributions instead: ``sum_t log (1/K) sum_i p_i(x_t | x_<t)``, the predictive distribution of the ensemble
    at every position (which is what a validation loss measures)."""
    options = {"num_samples": latent_samples} if latent_samples else {}
    if isinstance(model, TokenLikelihood):
        per_token = jax.vmap(lambda p: model.token_log_probs(p, batch, key))(params)  # [K, B, T]
        k = per_token.shape[0]
        return (jax.nn.logsumexp(per_token, axis=0) - math.log(k)).sum(-1)
    lp = jax.vmap(lambda p: model.log_prob(p, batch, key, **options))(params)  # [K, B]
    return jax.nn.logsumexp(lp, axis=0) - math.log(lp.shape[0])


def likelihood_metrics(setup, state, split: str = "test", max_examples: int = 0, batch_size: int = 0,
                       seed: int = 0, importance_samples: int = 0, progress: bool = True,
                       ensemble: bool = False) -> dict:
    """Mean ``-log p(x)`` over a split from ``model.log_prob``, in nats per example, and per dimension in bits.

    Keys: a `LatentVariable` model's estimate is importance-weighted with k samples (Burda et al. 2016; k =
    ``importance_samples`` or the model's ``iwae_samples``): ``iwae{k}_nll``, ``iwae{k}_bits_per_dim``, ``iwae_k``,
    ``iwae_examples``. An exact likelihood gives ``{split}_nll`` and ``{split}_bits_per_dim`` (images) or
    ``{split}_nll_per_token``, ``{split}_bits_per_token`` and ``{split}_perplexity`` (token models), and
    ``{split}_nll_examples``.

    The evaluation data transform is a fixed function of each example (see `aigc_jax.data.pipeline.eval_batches`),
    so these and `aigc_jax.train.loop.evaluate`'s metrics refer to the same (binarized) test data at any batch size.

    ``ensemble``: ``setup`` and ``state`` are a population's, and the metrics are those of the members' mixture
    (`ensemble_log_prob`).
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
    if max_examples and not batch_size:  # a few examples of a costly likelihood (a diffusion bound): no padding
        ways = setup.mesh.size
        bs = min(bs, -(-max_examples // ways) * ways)

    def nll_sum(state, batch, mask, key):
        data_key, _ = jax.random.split(key)
        b = setup.transform(batch, data_key)
        options = {"num_samples": k} if latent else {}
        if ensemble:
            lp = ensemble_log_prob(model, state["params"], b, jax.random.fold_in(key, 1), k if latent else 0)
        else:
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
