"""The GAN family on the one trainer: DCGAN (Radford et al. 2015), WGAN-GP (Gulrajani et al. 2017) and the
class-conditional GAN with a projection discriminator (Miyato & Koyama 2018), as one final model whose config
picks the networks, the loss and the regularisers.

Two players, ``discriminator`` and ``generator``; the experiment's update schedule (``players.discriminator.
updates_per_step`` = n_critic) runs the discriminator first, each update on its own micro-batch, then the
generator, all inside one jitted step. Non-trainable state (``model_state``):

- ``g_stats``: the generator's batch-norm running statistics (updated by generator updates);
- ``ema``, ``ema_stats``, ``ema_count``: an exponential moving average of the generator's weights, with decay
  ``min(ema_decay, (1 + t) / (10 + t))`` after the t-th generator update (the warm-up keeps the average from
  dwelling on the initialisation), and the running statistics of that averaged generator, measured by running it in
  training mode on each generator update's noise. Sampling and evaluation use the average (`sampling_params`);
- ``sn``: spectral-norm power-iteration vectors of the discriminator (updated by discriminator updates).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import Condition, Extras, GenerativeModel, ModelSpec, SeparateSamplingWeights, StateUpdates
from aigc_jax.core.errors import UserError
from aigc_jax.models.gan import losses, spectral
from aigc_jax.models.gan.networks import Discriminator, Generator
from aigc_jax.nn.ema import ema_update, ema_warmup_decay
from aigc_jax.nn.layers import ParamKeys


@dataclasses.dataclass(frozen=True)
class GANConfig(ModelConfig):
    image_shape: tuple[int, ...] = (28, 28, 1)
    latent_dim: int = 64
    g_channels: tuple[int, ...] = (64, 32)  # the base map's channels, then each upsampling stage's input
    d_channels: tuple[int, ...] = (32, 64)  # each stride-2 stage's output
    g_hidden: tuple[int, ...] = ()  # linear layers between z and the base map
    d_hidden: tuple[int, ...] = ()  # linear layers between the last convolution and the output
    g_norm: Literal["batch", "none"] = "batch"
    d_norm: Literal["batch", "layer", "none"] = "batch"
    # How the discriminator's convolutions are lowered: "xla" convolutions, or "matmul" (explicit patches times the
    # kernel; the same function and parameters, several times faster for a gradient penalty under XLA:CPU)
    d_conv: Literal["xla", "matmul"] = "xla"
    loss: Literal["non_saturating", "hinge", "wgan_gp"] = "non_saturating"
    gp_weight: float = 10.0  # lambda of the gradient penalty (wgan_gp only)
    minibatch_std: bool = False  # the discriminator sees the batch's feature standard deviation (Karras et al.)
    spectral_norm: bool = False  # spectral normalisation of every discriminator weight
    sn_iterations: int = 1  # power iterations per discriminator update
    ema_decay: float = 0.999  # generator weight average used for sampling; 0 samples the raw generator
    num_classes: int = 0  # > 0: class-conditional generator and projection discriminator

    def validate(self) -> None:
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise UserError(f"bad model.image_shape {self.image_shape}: expected H,W,C")
        if not self.g_channels or not self.d_channels:
            raise UserError("model.g_channels and model.d_channels need at least one stage each")
        s = 2 ** len(self.g_channels)
        if self.image_shape[0] % s or self.image_shape[1] % s:
            raise UserError(f"model.image_shape {self.image_shape[:2]} must be divisible by 2^len(g_channels) = {s}")
        if self.latent_dim < 1 or self.num_classes < 0 or self.sn_iterations < 1:
            raise UserError("model.latent_dim and model.sn_iterations must be >= 1, model.num_classes >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"model.ema_decay={self.ema_decay}: expected 0 <= decay < 1 (0 disables the average)")
        if self.loss == "wgan_gp" and (self.d_norm == "batch" or self.minibatch_std):
            raise UserError("model.loss=wgan_gp needs a critic without batch statistics (the penalty is per "
                            "example): set model.d_norm=layer or none and model.minibatch_std=false")


class GAN(GenerativeModel, SeparateSamplingWeights, StateUpdates, Extras):
    """Pure functions of a GAN over params ``{"generator": ..., "discriminator": ...}``."""

    players = ("discriminator", "generator")

    def __init__(self, config: GANConfig):
        self.config = config
        label = (Condition("label", "label", required=True, num_classes=config.num_classes,
                           doc="the class of each sample"),) if config.num_classes else ()
        sample_metrics = ("fid", "kid", "is", "pr", *(("label_accuracy",) if config.num_classes else ()))
        self._spec = ModelSpec(output="image", shape=tuple(config.image_shape), conditions=label,
                               metrics=("loss", *sample_metrics), default_metrics=sample_metrics)
        gen = nnx.eval_shape(lambda: self._make_generator(ParamKeys(0)))
        self._g_graph, _, _ = nnx.split(gen, nnx.Param, nnx.BatchStat)
        disc = nnx.eval_shape(lambda: self._make_discriminator(ParamKeys(0)))
        self._d_graph, _ = nnx.split(disc, nnx.Param)
        self._has_stats = config.g_norm == "batch"

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def _make_generator(self, rngs):
        c = self.config
        return Generator(c.image_shape, c.latent_dim, c.g_channels, c.g_norm, c.num_classes, rngs=rngs,
                         hidden=c.g_hidden)

    def _make_discriminator(self, rngs):
        c = self.config
        return Discriminator(c.image_shape, c.d_channels, c.d_norm, c.num_classes, rngs=rngs,
                             minibatch_std=c.minibatch_std, hidden=c.d_hidden, conv_impl=c.d_conv)

    # -- networks as pure functions ---------------------------------------------------------------------------
    def generate(self, g_params, g_stats, z, label=None, *, train: bool):
        """Images in [-1, 1] ``[B, H, W, C]`` and the updated running statistics (unchanged unless ``train``)."""
        net = nnx.merge(self._g_graph, g_params, g_stats if self._has_stats else {})
        x = net(z, label, train=train)
        stats = nnx.to_pure_dict(nnx.state(net, nnx.BatchStat)) if self._has_stats else {}
        return x, stats

    def discriminate(self, d_params, x, label=None):
        """Raw discriminator outputs ``[B]`` (logits or critic values) for images in [-1, 1]."""
        return nnx.merge(self._d_graph, d_params)(x, label)

    def _label(self, batch_or_label):
        if not self.config.num_classes:
            return None
        if batch_or_label is None:
            raise ValueError("this conditional GAN needs a label")
        return batch_or_label

    def _noise(self, key, num):
        return jax.random.normal(key, (num, self.config.latent_dim), jnp.float32)

    # -- the contract -------------------------------------------------------------------------------------------
    def init(self, key):
        kg, kd, ku = jax.random.split(key, 3)
        gen, disc = self._make_generator(ParamKeys(kg)), self._make_discriminator(ParamKeys(kd))
        g_params = nnx.to_pure_dict(nnx.state(gen, nnx.Param))
        d_params = nnx.to_pure_dict(nnx.state(disc, nnx.Param))
        state: dict = {}
        if self._has_stats:
            state["g_stats"] = nnx.to_pure_dict(nnx.state(gen, nnx.BatchStat))
        if self.config.ema_decay > 0:
            state["ema"] = jax.tree.map(jnp.copy, g_params)
            state["ema_count"] = jnp.zeros((), jnp.int32)
            if self._has_stats:
                state["ema_stats"] = jax.tree.map(jnp.copy, state["g_stats"])
        if self.config.spectral_norm:
            state["sn"] = spectral.init_vectors(d_params, ku)
        return {"generator": g_params, "discriminator": d_params}, state

    def _d_params(self, params, state, update: bool):
        """The discriminator's weights as used in the forward pass (spectrally normalised if configured)."""
        d = params["discriminator"]
        if not self.config.spectral_norm:
            return d, state
        d, vectors = spectral.normalise(d, state["sn"], self.config.sn_iterations, update=update)
        return d, {**state, "sn": vectors} if update else state

    def _scores(self, d_params, real, fake, label):
        """D on real and fake images; one forward on the concatenation unless D uses batch statistics (batch norm,
        minibatch std), which are computed over the real and the fake batch separately, as in DCGAN."""
        if self.config.d_norm == "batch" or self.config.minibatch_std:
            return self.discriminate(d_params, real, label), self.discriminate(d_params, fake, label)
        both = self.discriminate(d_params, jnp.concatenate([real, fake]),
                                 None if label is None else jnp.concatenate([label, label]))
        return both[: real.shape[0]], both[real.shape[0]:]

    def loss(self, player, params, state, batch, key):
        cfg = self.config
        real = batch["image"] * 2.0 - 1.0
        label = self._label(batch.get("label")) if cfg.num_classes else None
        kz, kgp = jax.random.split(key)
        z = self._noise(kz, real.shape[0])
        if player == "discriminator":
            fake, _ = self.generate(params["generator"], state.get("g_stats", {}), z, label, train=True)
            fake = jax.lax.stop_gradient(fake)
            d_params, state = self._d_params(params, state, update=True)
            d_real, d_fake = self._scores(d_params, real, fake, label)
            loss = losses.discriminator_loss(cfg.loss, d_real, d_fake)
            metrics = {"d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}
            if cfg.loss == "wgan_gp":
                gp = losses.gradient_penalty(lambda x: self.discriminate(d_params, x, label), real, fake, kgp)
                loss = loss + cfg.gp_weight * gp
                metrics.update(gp=gp, wasserstein=jnp.mean(d_real) - jnp.mean(d_fake))
            return loss, (metrics, state)
        if player == "generator":
            fake, g_stats = self.generate(params["generator"], state.get("g_stats", {}), z, label, train=True)
            d_params, _ = self._d_params(params, state, update=False)
            d_fake = self.discriminate(d_params, fake, label)
            loss = losses.generator_loss(cfg.loss, d_fake)
            new_state = dict(state)
            if self._has_stats:
                new_state["g_stats"] = g_stats
                if cfg.ema_decay > 0:
                    # The averaged generator's own batch statistics, from the same noise.
                    _, ema_stats = self.generate(state["ema"], state["ema_stats"], z, label, train=True)
                    new_state["ema_stats"] = jax.lax.stop_gradient(ema_stats)
            return loss, ({"d_fake": jnp.mean(d_fake)}, new_state)
        raise ValueError(f"unknown player {player!r}")

    def after_update(self, player, params, state):
        if player != "generator" or self.config.ema_decay <= 0:
            return state
        t = state["ema_count"] + 1
        decay = ema_warmup_decay(self.config.ema_decay, t)
        return {**state, "ema": ema_update(state["ema"], params["generator"], decay), "ema_count": t}

    def sampling_params(self, params, state):
        """The generator that samples: the moving average (if configured) with its running statistics."""
        ema = self.config.ema_decay > 0
        out = {"generator": state["ema"] if ema else params["generator"]}
        if self._has_stats:
            out["generator_stats"] = state["ema_stats"] if ema else state["g_stats"]
        return out

    def _sample(self, params, key, num: int, label=None):
        """``num`` images ``[num, H, W, C]`` in [0, 1]; ``params`` as returned by `sampling_params` (what
        `aigc_jax.load` gives)."""
        if "generator" not in params or (self._has_stats and "generator_stats" not in params):
            raise UserError("GAN.sample takes the sampling params (aigc_jax.load(...).params, or "
                            "sampling_params(model, params, state)): the generator and its running statistics, "
                            f"got the keys {sorted(params)}")
        x, _ = self.generate(params["generator"], params.get("generator_stats", {}), self._noise(key, num), label,
                             train=False)
        return (x + 1.0) / 2.0

    def eval_metrics(self, params, state, batch, key):
        """Per test example: the discriminator's output on it and on one sample of the sampling generator."""
        real = batch["image"] * 2.0 - 1.0
        label = self._label(batch.get("label")) if self.config.num_classes else None
        sp = self.sampling_params(params, state)
        fake, _ = self.generate(sp["generator"], sp.get("generator_stats", {}), self._noise(key, real.shape[0]),
                                label, train=False)
        d_params, _ = self._d_params(params, state, update=False)
        d_real, d_fake = self._scores(d_params, real, fake, label)
        return {"d_real": d_real, "d_fake": d_fake}

    def extras(self) -> dict:
        return {"generate": self.generate, "discriminate": self.discriminate}
