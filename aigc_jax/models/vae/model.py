"""The VAE family: MLP VAE (Kingma & Welling 2013), convolutional VAE, beta-VAE (Higgins et al. 2017) and
conditional VAE (Sohn et al. 2015), as one final model whose config picks the variant.

Objective per example (all sums, in nats):
    rec(x) = -log p(x | z),  z = mean + exp(logvar / 2) * eps   (one reparameterised sample)
    kl(x)  = KL(q(z | x) || N(0, I))                            (closed form, summed over latents)
    loss   = mean_batch(rec + beta * kl)          neg_elbo = mean_batch(rec + kl)
The importance-weighted bound (Burda et al. 2016) estimates log p(x) with k samples:
    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import Condition, Extras, GenerativeModel, LatentVariable, ModelSpec
from aigc_jax.core.errors import UserError
from aigc_jax.models.vae import likelihoods as lik
from aigc_jax.models.vae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from aigc_jax.nn.layers import ParamKeys


@dataclasses.dataclass(frozen=True)
class VAEConfig(ModelConfig):
    arch: Literal["mlp", "conv"] = "mlp"
    image_shape: tuple[int, ...] = (28, 28, 1)
    hidden: tuple[int, ...] = (500, 500)  # MLP widths (the decoder mirrors them)
    channels: tuple[int, ...] = (32, 64)  # conv: channels of each stride-2 stage
    latent_dim: int = 50
    activation: Literal["relu", "tanh", "gelu", "softplus"] = "relu"
    likelihood: Literal["bernoulli", "continuous_bernoulli"] = "bernoulli"
    beta: float = 1.0  # weight of the KL term in the training loss (beta-VAE); metrics always use beta = 1
    num_classes: int = 0  # > 0: conditional VAE, labels one-hot into encoder and decoder
    iwae_samples: int = 1000  # k of the importance-weighted NLL estimate reported by `eval`
    iwae_chunk: int = 100  # samples decoded at once in the IWAE estimate (memory vs speed)
    # arch=mlp: the dtype of the products (params stay float32, the master copy; outputs and the loss are float32)
    compute_dtype: Literal["float32", "bfloat16"] = "float32"

    @property
    def needs_binary_data(self) -> bool:
        """A Bernoulli decoder is a likelihood of binary pixels only (grey data: continuous_bernoulli)."""
        return self.likelihood == "bernoulli"

    @property
    def bf16_by_default(self) -> bool:
        """Whether `aigc_jax.train.host`'s fast defaults may pick ``compute_dtype=bfloat16``: for the MLP networks
        (the convolutional ones compute in float32 only). Measured for ``vae-mnist`` (benchmarks/README.md, "Fast
        by default"): about 15% faster per step, and over three seeds the test bounds average the same as float32's."""
        return self.arch == "mlp"

    def validate(self) -> None:
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise UserError(f"bad model.image_shape {self.image_shape}: expected H,W,C")
        if self.latent_dim < 1 or self.beta < 0 or self.num_classes < 0:
            raise UserError("model.latent_dim must be >= 1, model.beta >= 0 and model.num_classes >= 0")
        if self.iwae_samples < 1 or self.iwae_chunk < 1 or self.iwae_samples % self.iwae_chunk:
            raise UserError(
                f"model.iwae_samples={self.iwae_samples} must be a positive multiple of model.iwae_chunk="
                f"{self.iwae_chunk}"
            )
        if self.arch == "mlp" and not self.hidden:
            raise UserError("model.hidden needs at least one width for arch=mlp")
        if self.arch == "conv" and not self.channels:
            raise UserError("model.channels needs at least one stage for arch=conv")
        if self.arch == "conv" and self.compute_dtype != "float32":
            raise UserError(f"model.compute_dtype={self.compute_dtype} needs arch=mlp (the convolutional networks "
                            "compute in float32)")


class VAENetwork(nnx.Module):
    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        if cfg.arch == "mlp":
            args = (cfg.image_shape, cfg.hidden, cfg.latent_dim, cfg.num_classes, cfg.activation)
            self.encoder = MLPEncoder(*args, rngs=rngs, compute_dtype=cfg.compute_dtype)
            self.decoder = MLPDecoder(*args, rngs=rngs, compute_dtype=cfg.compute_dtype)
        else:
            args = (cfg.image_shape, cfg.channels, cfg.latent_dim, cfg.num_classes, cfg.activation)
            self.encoder = ConvEncoder(*args, rngs=rngs)
            self.decoder = ConvDecoder(*args, rngs=rngs)


class VAE(GenerativeModel, LatentVariable, Extras):
    """Pure functions of a VAE over plain-pytree params ``{"vae": {...}}``."""

    players = ("vae",)

    def __init__(self, config: VAEConfig):
        self.config = config
        self.iwae_samples = config.iwae_samples
        label = (Condition("label", "label", required=True, num_classes=config.num_classes,
                           doc="the class of each sample (a conditional VAE)"),) if config.num_classes else ()
        self._spec = ModelSpec(output="image", shape=tuple(config.image_shape), conditions=label,
                               data_dims=math.prod(config.image_shape),
                               metrics=("loss", "nll", "fid", "kid", "is", "pr",
                                        *(("label_accuracy",) if config.num_classes else ())),
                               default_metrics=("loss", "nll"))
        abstract = nnx.eval_shape(lambda: VAENetwork(config, rngs=ParamKeys(0)))
        self._graphdef, _ = nnx.split(abstract)
        self._log_prob = lik.LOG_PROBS[config.likelihood]
        self._mean = lik.MEANS[config.likelihood]

    # -- plumbing -------------------------------------------------------------------------------------------
    def _net(self, params) -> VAENetwork:
        return nnx.merge(self._graphdef, params["vae"])

    def _onehot(self, label):
        if not self.config.num_classes:
            return None
        if label is None:
            raise ValueError("this conditional VAE needs a label")
        return jax.nn.one_hot(label, self.config.num_classes, dtype=jnp.float32)

    # -- the contract ---------------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def init(self, key):
        net = VAENetwork(self.config, rngs=ParamKeys(key))
        return {"vae": nnx.to_pure_dict(nnx.state(net))}, {}

    def encode(self, params, x, label=None):
        """q(z | x): images [B, H, W, C] in [0, 1] -> (mean [B, D], logvar [B, D])."""
        return self._net(params).encoder(x, self._onehot(label))

    def decode_logits(self, params, z, label=None):
        return self._net(params).decoder(z, self._onehot(label))

    def decode(self, params, z, label=None):
        """The mean of p(x | z) as images [B, H, W, C] in [0, 1]."""
        return self._mean(self.decode_logits(params, z, label))

    def _terms(self, params, batch, key):
        x, y = batch["image"], self._onehot(batch.get("label"))
        net = self._net(params)
        mean, logvar = net.encoder(x, y)
        z = lik.reparameterize(key, mean, logvar)
        rec = -self._log_prob(x, net.decoder(z, y))
        kl = lik.gaussian_kl(mean, logvar)
        return rec, kl

    def loss(self, player, params, state, batch, key):
        rec, kl = self._terms(params, batch, key)
        loss = jnp.mean(rec + self.config.beta * kl)
        metrics = {"neg_elbo": jnp.mean(rec + kl), "rec": jnp.mean(rec), "kl": jnp.mean(kl)}
        return loss, (metrics, state)

    def eval_metrics(self, params, state, batch, key):
        rec, kl = self._terms(params, batch, key)
        return {"loss": rec + self.config.beta * kl, "neg_elbo": rec + kl, "rec": rec, "kl": kl}

    def log_prob(self, params, batch, key=None, num_samples: int | None = None, chunk: int | None = None):
        """Importance-weighted estimate of log p(x) per example ``[B]`` with k = ``num_samples`` samples (decoded
        ``chunk`` at a time; default ``model.iwae_chunk``, or its largest divisor that divides k)."""
        if key is None:
            raise UserError("VAE.log_prob is an importance-weighted estimate: it needs a key")
        k = num_samples or self.config.iwae_samples
        c = min(chunk or self.config.iwae_chunk, k)
        if k % c:
            if chunk:
                raise UserError(f"num_samples={k} must be a multiple of chunk={c}")
            c = math.gcd(k, c)
        x, y = batch["image"], self._onehot(batch.get("label"))
        net = self._net(params)
        mean, logvar = net.encoder(x, y)
        B = x.shape[0]

        def one_chunk(_, ck):
            eps = jax.random.normal(ck, (c, *mean.shape), mean.dtype)  # [c, B, D]
            z = mean[None] + jnp.exp(0.5 * logvar)[None] * eps
            zf = z.reshape(c * B, -1)
            yf = None if y is None else jnp.broadcast_to(y, (c, *y.shape)).reshape(c * B, -1)
            xf = jnp.broadcast_to(x, (c, *x.shape)).reshape(c * B, *x.shape[1:])
            log_px = self._log_prob(xf, net.decoder(zf, yf)).reshape(c, B)
            log_w = log_px + lik.standard_normal_log_prob(z) - lik.gaussian_log_prob(z, mean[None], logvar[None])
            return None, log_w

        _, log_w = jax.lax.scan(one_chunk, None, jax.random.split(key, k // c))  # [k/c, c, B]
        return jax.nn.logsumexp(log_w.reshape(k, B), axis=0) - math.log(k)

    def _sample(self, params, key, num: int, label=None):
        """``num`` images [num, H, W, C] in [0, 1]: the decoder mean at z ~ N(0, I)."""
        z = jax.random.normal(key, (num, self.config.latent_dim), jnp.float32)
        return self.decode(params, z, label)

    def extras(self) -> dict:
        """Family extras that `aigc_jax.load` exposes beside ``sample_fn``."""
        return {"encode": self.encode, "decode": self.decode, "log_prob": self.log_prob}
