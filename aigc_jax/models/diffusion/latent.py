"""Flow matching in the latent space of an autoencoder trained beside it (latent diffusion, Rombach et al. 2022;
with the flow-matching objective, as Stable Diffusion 3 and Flux use it, Esser et al. 2024).

Two players on the one trainer, updated in this order every step on the same batch:

- ``autoencoder``: an MLP encoder q(z | x) = N(mean(x), diag(exp(logvar(x)))) over a flat ``latent_dim`` latent
  and an MLP decoder of per-pixel logits (the VAE family's `MLPEncoder` / `MLPDecoder`), trained on
  ``BCE(sigmoid(decoder(z)), x) + kl_weight * KL(q(z | x) || N(0, I))`` per image, summed over pixels, with
  ``z ~ q(z | x)`` and the grey levels of x in [0, 1] as the targets. A small ``kl_weight`` keeps the latent near
  unit scale, the flow's noise end, without blurring the reconstructions much (Rombach et al.'s KL-regularised
  autoencoder);
- ``denoiser``: the flow of `processes.Flow` on ``z ~ q(z | x)`` of the current autoencoder (no gradient reaches
  the autoencoder from it), with the residual MLP of `aigc_jax.nn.mlp` as the backbone and the moving average of
  its weights for sampling, as the pixel-space models.

Sampling: z_1 ~ N(0, I) ``[num, latent_dim]``, the flow's sampler down to z_0, then ``sigmoid(decoder(z_0))``.
The denoiser network costs a few MFLOP per example against about 130 for the pixel-space U-Net of ``flow-mnist``,
so on a CPU the flow trains for many more steps in the same time (benchmarks/README.md, "Diffusion and flow").
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.core.errors import UserError
from aigc_jax.models.diffusion.model import Diffusion, DiffusionConfig, flow_process
from aigc_jax.models.vae.likelihoods import bernoulli_log_prob, gaussian_kl, reparameterize
from aigc_jax.models.vae.networks import MLPDecoder, MLPEncoder
from aigc_jax.nn.layers import ParamKeys
from aigc_jax.nn.mlp import ResidualMLP


@dataclasses.dataclass(frozen=True)
class LatentFlowConfig(DiffusionConfig):
    """The autoencoder (``latent_dim``, ``encoder_hidden``, ``kl_weight``), the denoiser (``width``, ``depth``)
    and the flow's time sampling."""

    latent_dim: int = 32
    encoder_hidden: tuple[int, ...] = (1024, 512)  # the encoder's hidden widths; the decoder mirrors them
    kl_weight: float = 0.01
    width: int = 512  # the residual MLP's width
    depth: int = 4  # its residual blocks
    dropout: float = 0.0
    ema_decay: float = 0.999
    sampler: str = "euler"
    clip_denoised: bool = False
    time_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def process(self):
        return flow_process(self)

    def validate_backbone(self) -> None:
        if self.latent_dim < 1 or self.width < 1 or self.depth < 1:
            raise UserError("model.latent_dim, model.width and model.depth must be >= 1")
        if not self.encoder_hidden or min(self.encoder_hidden) < 1:
            raise UserError(f"model.encoder_hidden={tuple(self.encoder_hidden)}: expected one or more widths >= 1")
        if self.kl_weight <= 0:
            raise UserError(f"model.kl_weight={self.kl_weight}: expected > 0 (it keeps the latent near N(0, I))")
        if self.clip_denoised:
            raise UserError("model.clip_denoised=true clips to [-1, 1], which a latent is not bounded by; "
                            "expected false")


class Autoencoder(nnx.Module):
    """``encoder(x [B, H, W, C]) -> (mean, logvar) [B, D]`` and ``decoder(z [B, D]) -> logits [B, H, W, C]``."""

    def __init__(self, image_shape, hidden, latent_dim: int, *, rngs: nnx.Rngs):
        self.encoder = MLPEncoder(image_shape, hidden, latent_dim, 0, "relu", rngs=rngs)
        self.decoder = MLPDecoder(image_shape, hidden, latent_dim, 0, "relu", rngs=rngs)


class LatentFlowModel(Diffusion):
    """Flow matching on the latent of a jointly trained autoencoder (module docstring); params
    ``{"autoencoder": ..., "denoiser": ...}``."""

    players = ("autoencoder", "denoiser")

    def __init__(self, config: LatentFlowConfig):
        super().__init__(config)
        self._ae_graph, _ = nnx.split(nnx.eval_shape(lambda: self._make_autoencoder(ParamKeys(0))))

    def _make(self, rngs):
        c = self.config
        return ResidualMLP(c.latent_dim, c.width, c.depth, c.dropout, c.num_classes, rngs=rngs)

    def _make_autoencoder(self, rngs):
        c = self.config
        return Autoencoder(tuple(c.image_shape), tuple(c.encoder_hidden), c.latent_dim, rngs=rngs)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (self.config.latent_dim,)

    # -- the autoencoder -----------------------------------------------------------------------------------------
    def encode(self, params, images):
        """q(z | x) for images ``[B, H, W, C]`` in [0, 1]: ``(mean, logvar)``, each ``[B, latent_dim]``."""
        return nnx.merge(self._ae_graph, params["autoencoder"]).encoder(images)

    def decode_logits(self, params, z):
        """The decoder's per-pixel logits ``[B, H, W, C]`` for latents ``[B, latent_dim]``."""
        return nnx.merge(self._ae_graph, params["autoencoder"]).decoder(z)

    def decode(self, params, z):
        """Images ``[B, H, W, C]`` in [0, 1] (the decoder's per-pixel means) for latents ``[B, latent_dim]``."""
        return jax.nn.sigmoid(self.decode_logits(params, z))

    def _posterior_sample(self, params, images, key):
        mean, logvar = self.encode(params, images)
        return mean, logvar, reparameterize(key, mean, logvar)

    def _autoencoder_terms(self, params, batch, key):
        """Per image ``[B]``: the reconstruction's binary cross-entropy with the grey levels (summed over
        pixels) and KL(q(z | x) || N(0, I))."""
        x = batch["image"]
        mean, logvar, z = self._posterior_sample(params, x, key)
        return -bernoulli_log_prob(x, self.decode_logits(params, z)), gaussian_kl(mean, logvar)

    # -- the diffusion hooks ---------------------------------------------------------------------------------------
    def clean(self, params, batch, key):
        """``z ~ q(z | x)`` of the current autoencoder, with no gradient to it."""
        return jax.lax.stop_gradient(self._posterior_sample(params, batch["image"], key)[2])

    def to_images(self, params, x0):
        return self.decode(params, x0)

    # -- the contract ------------------------------------------------------------------------------------------
    def init(self, key):
        params, state = super().init(key)
        ae = nnx.to_pure_dict(nnx.state(self._make_autoencoder(ParamKeys(jax.random.fold_in(key, 1))), nnx.Param))
        return {"autoencoder": ae, **params}, state

    def loss(self, player, params, state, batch, key):
        if player == "autoencoder":
            rec, kl = self._autoencoder_terms(params, batch, key)
            return jnp.mean(rec + self.config.kl_weight * kl), ({"reconstruction": jnp.mean(rec),
                                                                 "kl": jnp.mean(kl)}, state)
        return super().loss(player, params, state, batch, key)

    def eval_metrics(self, params, state, batch, key):
        """The flow's loss (`Diffusion.eval_metrics`) and the autoencoder's reconstruction cross-entropy, nats
        per image, at ``z ~ q(z | x)``."""
        k_flow, k_ae = jax.random.split(key)
        rec, _ = self._autoencoder_terms(params, batch, k_ae)
        return {**super().eval_metrics(params, state, batch, k_flow), "reconstruction": rec}

    def extras(self) -> dict:
        return {**super().extras(), "encode": self.encode, "decode": self.decode}
