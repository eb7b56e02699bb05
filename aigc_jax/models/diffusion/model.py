"""Diffusion and flow models on the one trainer: a process (`processes`), a backbone (`aigc_jax.nn.unet.UNet`)
and samplers (`samplers`), composed by one model class per kind of process.

One player, ``denoiser``. Training (per example, pixels in [-1, 1]):

    t ~ process.sample_time,  eps ~ N(0, I),  x_t = a(t) x0 + s(t) eps,
    loss = mean over pixels of (net(x_t, t, y') - target(x0, eps, t))^2,

where ``y'`` is the label replaced by the null class with probability ``label_dropout`` (classifier-free
guidance). An exponential moving average of the weights (``ema_decay``, with the warm-up of `aigc_jax.nn.ema`) is
kept in the model state and samples (`sampling_params`), as in DDPM.

Sampling: ``sample(params, key, num, label=None, steps=..., sampler=..., guidance=..., eta=...)``: x_T ~ N(0, I),
then the sampler on the process's grid of ``steps`` times; a conditional model with no label samples
unconditionally (the null class), with a label and ``guidance = w`` it samples ``uncond + w (cond - uncond)``.

`DDPMModel` is also a `Likelihood`: ``log_prob`` is minus the variational bound of Ho et al. 2020, eq. 5
(a lower bound on log p(x) of the discretized data, in nats; `vlb_terms`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import (
    Condition,
    Extras,
    GenerativeModel,
    Likelihood,
    ModelSpec,
    SeparateSamplingWeights,
    StateUpdates,
)
from aigc_jax.core.errors import UserError
from aigc_jax.models.diffusion import processes, samplers
from aigc_jax.nn.ema import ema_update, ema_warmup_decay
from aigc_jax.nn.layers import ParamKeys
from aigc_jax.nn.unet import UNet


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(ModelConfig):
    """The conditioning, moving average and default sampler settings shared by every process and backbone."""

    image_shape: tuple[int, ...] = (28, 28, 1)
    dropout: float = 0.1  # in the backbone's residual blocks
    num_classes: int = 0  # > 0: class-conditional, with the null class for guidance
    label_dropout: float = 0.1  # probability of training on the null class (classifier-free guidance)
    ema_decay: float = 0.9999  # 0 samples the raw weights
    clip_denoised: bool = True  # samplers clip x0_hat to [-1, 1] (and recompute eps_hat from it)
    sample_steps: int = 50  # default sampler steps
    sampler: str = "ddim"
    guidance: float = 1.0  # default guidance weight (1: the conditional model)
    eta: float = 0.0  # the ddim sampler's stochasticity

    def validate(self) -> None:
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise UserError(f"bad model.image_shape {self.image_shape}: expected H,W,C")
        self.validate_backbone()
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.label_dropout < 1.0:
            raise UserError("model.dropout and model.label_dropout must be in [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"model.ema_decay={self.ema_decay}: expected 0 <= decay < 1 (0 disables the average)")
        if self.num_classes < 0 or self.sample_steps < 1 or self.guidance < 0 or not 0.0 <= self.eta <= 1.0:
            raise UserError("model.num_classes >= 0, model.sample_steps >= 1, model.guidance >= 0 and "
                            "0 <= model.eta <= 1 expected")
        names = samplers.sampler_names(self.process())
        if self.sampler not in names:
            raise UserError(f"model.sampler={self.sampler!r}: expected one of {', '.join(names)}")

    def validate_backbone(self) -> None:
        raise NotImplementedError

    def process(self):
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class UNetConfig(DiffusionConfig):
    """A diffusion model in pixel space on the U-Net of `aigc_jax.nn.unet`."""

    channels: int = 32  # the U-Net's base width
    channel_mults: tuple[int, ...] = (1, 2)  # one per resolution level
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (14,)  # the feature-map sizes (after patching) with self-attention
    patch_size: int = 1  # > 1: the U-Net runs on non-overlapping p x p patches (space-to-depth)

    def validate_backbone(self) -> None:
        if self.channels < 1 or not self.channel_mults or self.num_res_blocks < 1 or self.patch_size < 1:
            raise UserError("model.channels, model.num_res_blocks and model.patch_size must be >= 1 and "
                            "model.channel_mults non-empty")
        h, w = self.image_shape[0] // self.patch_size, self.image_shape[1] // self.patch_size
        if self.image_shape[0] % self.patch_size or self.image_shape[1] % self.patch_size:
            raise UserError(f"model.image_shape {self.image_shape[:2]} is not divisible by model.patch_size "
                            f"{self.patch_size}")
        for level in range(len(self.channel_mults) - 1):
            if (h >> level) % 2 or (w >> level) % 2:
                raise UserError(f"the U-Net halves {h}x{w} {len(self.channel_mults) - 1} times: level {level} "
                                f"({h >> level}x{w >> level}) is odd; use fewer model.channel_mults")
        sizes = [h >> level for level in range(len(self.channel_mults))]  # the feature-map height per level
        missing = [r for r in self.attention_resolutions if r not in sizes]
        if missing:
            raise UserError(f"model.attention_resolutions {tuple(self.attention_resolutions)}: {missing} is not a "
                            f"feature-map size of this U-Net (its levels are {', '.join(map(str, sizes))})")


@dataclasses.dataclass(frozen=True)
class DDPMConfig(UNetConfig):
    timesteps: int = 1000
    schedule: Literal["linear", "cosine"] = "linear"
    target: Literal["eps", "x0", "v"] = "eps"

    def process(self):
        return processes.DDPM(self.timesteps, self.schedule, self.target)

    def validate(self) -> None:
        if self.timesteps < 2:
            raise UserError(f"model.timesteps={self.timesteps}: expected >= 2")
        if self.sample_steps > self.timesteps:
            raise UserError(f"model.sample_steps={self.sample_steps} > model.timesteps={self.timesteps}")
        super().validate()


def flow_process(config) -> processes.Flow:
    """The `processes.Flow` of a flow config's ``time_sampling``, ``logit_mean`` and ``logit_std``."""
    if config.logit_std <= 0:
        raise UserError(f"model.logit_std={config.logit_std}: expected > 0")
    return processes.Flow(config.time_sampling, config.logit_mean, config.logit_std)


@dataclasses.dataclass(frozen=True)
class FlowConfig(UNetConfig):
    sampler: str = "euler"
    clip_denoised: bool = False  # the ODE samplers integrate the network's velocity as it is
    time_sampling: Literal["logit_normal", "uniform"] = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def process(self):
        return flow_process(self)


class Diffusion(GenerativeModel, SeparateSamplingWeights, StateUpdates, Extras):
    """Pure functions of a diffusion or flow model over params ``{"denoiser": ...}`` (module docstring)."""

    players = ("denoiser",)

    def __init__(self, config: DiffusionConfig):
        self.config = config
        self.process = config.process()
        c = config
        max_steps = c.timesteps if isinstance(c, DDPMConfig) else 100_000
        conds = [
            Condition("steps", "setting", low=1, high=max_steps, default=c.sample_steps,
                      doc="sampler steps"),
            Condition("sampler", "setting", dtype="str", choices=samplers.sampler_names(self.process),
                      default=c.sampler, doc="the sampler"),
            Condition("eta", "setting", dtype="float32", low=0.0, high=1.0, default=c.eta,
                      doc="the ddim sampler's stochasticity (0 deterministic, 1 ancestral)"),
        ]
        if c.num_classes:  # guidance only where there is a label to guide by (elsewhere it would do nothing)
            conds[:0] = [Condition("label", "label", num_classes=c.num_classes,
                                   doc="the class of each sample; none samples unconditionally")]
            conds.insert(3, Condition("guidance", "setting", dtype="float32", low=0.0, default=c.guidance,
                                      doc="classifier-free guidance weight (0 unconditional, 1 conditional)"))
        sample_metrics = ("fid", "kid", "is", "pr", *(("label_accuracy",) if c.num_classes else ()))
        likelihood = ("nll",) if isinstance(self, Likelihood) else ()
        self._spec = ModelSpec(output="image", shape=tuple(c.image_shape), conditions=tuple(conds),
                               data_dims=math.prod(c.image_shape), metrics=("loss", *likelihood, *sample_metrics),
                               default_metrics=("loss", *sample_metrics))
        self._graph, _ = nnx.split(nnx.eval_shape(lambda: self._make(ParamKeys(0))))

    def _make(self, rngs):
        c = self.config
        return UNet(tuple(c.image_shape), c.channels, tuple(c.channel_mults), c.num_res_blocks,
                    tuple(c.attention_resolutions), c.dropout, c.num_classes, patch_size=c.patch_size, rngs=rngs)

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    # -- the network and its prediction ------------------------------------------------------------------------
    def predict(self, params, x_t, t, label=None, key=None):
        """The network's raw prediction (eps, x0, v or velocity, per the process) ``[B, H, W, C]`` for noisy
        images in [-1, 1], process times ``t [B]`` and labels ``[B]`` (``num_classes`` = the null class)."""
        if self.config.num_classes and label is None:
            label = jnp.full((x_t.shape[0],), self.config.num_classes, jnp.int32)
        return nnx.merge(self._graph, params["denoiser"])(x_t, self.process.model_time(t), label, key)

    def denoiser(self, params, label=None, guidance: float = 1.0, clip: bool | None = None):
        """``denoise(x, t) -> (x0_hat, eps_hat)``, what the samplers see: the (guided) prediction converted by
        the process, x0_hat clipped to [-1, 1] when ``clip`` (default ``config.clip_denoised``)."""
        clip = self.config.clip_denoised if clip is None else clip
        if label is None or not self.config.num_classes:
            predict = lambda x, t: self.predict(params, x, t, label)  # noqa: E731
        else:
            predict = samplers.guided(lambda x, t, y: self.predict(params, x, t, y), label,
                                      self.config.num_classes, guidance)

        def denoise(x, t):
            x0, eps = self.process.to_x0_eps(predict(x, t), x, t)
            if clip:
                x0 = jnp.clip(x0, -1.0, 1.0)
                a, s = processes._bcast(self.process.coefficients(t), x)
                eps = (x - a * x0) / jnp.maximum(s, 1e-12)
            return x0, eps

        return denoise

    # -- the contract ------------------------------------------------------------------------------------------
    def init(self, key):
        params = {"denoiser": nnx.to_pure_dict(nnx.state(self._make(ParamKeys(key)), nnx.Param))}
        state = {}
        if self.config.ema_decay > 0:
            state = {"ema": jax.tree.map(jnp.copy, params["denoiser"]), "ema_count": jnp.zeros((), jnp.int32)}
        return params, state

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one example in the process's space (here the image; a latent model's latent)."""
        return tuple(self.config.image_shape)

    def clean(self, params, batch, key):
        """The clean data ``x0`` the process noises: images ``[B, H, W, C]`` scaled to [-1, 1]."""
        return batch["image"] * 2.0 - 1.0

    def to_images(self, params, x0):
        """Samples of the process ``x0`` -> images in [0, 1]."""
        return jnp.clip((x0 + 1.0) / 2.0, 0.0, 1.0)

    def _terms(self, params, batch, key, train: bool):
        # Five independent keys: the clean data's own randomness (a latent model's posterior sample) must not be
        # the process's noise. (A fold-in of 1 here would be: with JAX's partitionable threefry, split(key, n)[i]
        # is fold_in(key, i).)
        kt, ke, kl, kd, kc = jax.random.split(key, 5)
        x0 = self.clean(params, batch, kc)
        n = x0.shape[0]
        t = self.process.sample_time(kt, n)
        eps = jax.random.normal(ke, x0.shape, x0.dtype)
        x_t = processes.forward_marginal(self.process, x0, t, eps)
        label = None
        if self.config.num_classes:
            label = batch["label"].astype(jnp.int32)
            if train and self.config.label_dropout > 0:
                drop = jax.random.bernoulli(kl, self.config.label_dropout, (n,))
                label = jnp.where(drop, self.config.num_classes, label)
        pred = self.predict(params, x_t, t, label, kd if train else None)
        err = (pred - self.process.target_of(x0, eps, t)) ** 2
        return jnp.mean(err.reshape(n, -1), axis=1)

    def loss(self, player, params, state, batch, key):
        per_example = self._terms(params, batch, key, train=True)
        return jnp.mean(per_example), ({}, state)

    def eval_metrics(self, params, state, batch, key):
        """The training loss (the prediction's mean squared error, without dropout or label dropout) per test
        example at a random time."""
        return {"loss": self._terms(params, batch, key, train=False)}

    def after_update(self, player, params, state):
        if self.config.ema_decay <= 0 or player != "denoiser":
            return state
        t = state["ema_count"] + 1
        decay = ema_warmup_decay(self.config.ema_decay, t)
        return {**state, "ema": ema_update(state["ema"], params["denoiser"], decay), "ema_count": t}

    def sampling_params(self, params, state):
        """The moving average of the denoiser's weights when kept (``ema_decay > 0``), else the trained weights
        (the other players' params as they are)."""
        return {**params, "denoiser": state["ema"]} if self.config.ema_decay > 0 else dict(params)

    def _sample(self, params, key, num: int, label=None, steps: int = 50, sampler: str = "ddim",
                guidance: float = 1.0, eta: float = 0.0):
        """``num`` images ``[num, H, W, C]`` in [0, 1] (module docstring)."""
        try:
            times = self.process.grid(int(steps))
        except ValueError as e:
            raise UserError(f"{type(self).__name__}.sample: {e}") from None
        k0, ks = jax.random.split(key)
        x = jax.random.normal(k0, (num, *self.sample_shape), jnp.float32)
        x = samplers.SAMPLERS[sampler](self.process, self.denoiser(params, label, float(guidance)), x, times, ks,
                                       eta=float(eta))
        return self.to_images(params, x)

    def extras(self) -> dict:
        return {"predict": self.predict, "denoiser": self.denoiser}


class FlowModel(Diffusion):
    """Flow matching / rectified flow (`processes.Flow`), sampled with Euler or Heun on its ODE (or DDIM)."""


class DDPMModel(Diffusion, Likelihood):
    """DDPM (`processes.DDPM`), with ``log_prob`` minus the variational bound (`vlb_terms`)."""

    def vlb_terms(self, params, x0, key, label=None):
        """The terms of Ho et al. 2020, eq. 5, per example in nats, for images ``x0 [B, H, W, C]`` in [-1, 1] on
        the 256-level grid: ``prior`` = KL(q(x_T | x0) || N(0, I)); ``diffusion`` = sum over t = 2..T of
        KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)), with p's mean the posterior mean at x0_hat (clipped, as the
        sampler) and its variance the posterior's, beta-tilde_t, so each KL is
        ``c_t^2 |x0 - x0_hat|^2 / (2 beta-tilde_t)``, ``c_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)``;
        ``decoder`` = -log p(x0 | x_1), a Gaussian of mean x0_hat and variance beta_1 integrated over each pixel's
        bin of width 2/255 (the edge bins to infinity). Every t is evaluated (T network calls)."""
        p = self.process
        betas = jnp.asarray(p.betas, jnp.float32)
        ab = jnp.asarray(p.alpha_bar, jnp.float32)
        ab_prev = jnp.concatenate([jnp.ones((1,), jnp.float32), ab[:-1]])
        denoise = self.denoiser(params, label, 1.0, clip=self.config.clip_denoised)
        b = x0.shape[0]
        axes = tuple(range(1, x0.ndim))

        def x0_hat(t, k):
            eps = jax.random.normal(k, x0.shape, x0.dtype)
            tt = jnp.full((b,), t, jnp.int32)
            return denoise(processes.forward_marginal(p, x0, tt, eps), tt)[0]

        def kl_at(total, t):
            coef = jnp.sqrt(ab_prev[t]) * betas[t] / (1.0 - ab[t])
            var = (1.0 - ab_prev[t]) / (1.0 - ab[t]) * betas[t]
            err = jnp.sum((x0 - x0_hat(t, jax.random.fold_in(key, t))) ** 2, axis=axes)
            return total + coef ** 2 * err / (2.0 * var), None

        diffusion, _ = jax.lax.scan(kl_at, jnp.zeros((b,), jnp.float32), jnp.arange(1, p.timesteps))
        mean = x0_hat(0, jax.random.fold_in(key, 0))
        decoder = -jnp.sum(_discretized_gaussian_log_prob(x0, mean, jnp.sqrt(betas[0])), axis=axes)
        ab_T = ab[-1]
        prior = 0.5 * jnp.sum(ab_T * x0 ** 2 + (1.0 - ab_T) - 1.0 - jnp.log(1.0 - ab_T), axis=axes)
        return {"prior": prior, "diffusion": diffusion, "decoder": decoder}

    def log_prob(self, params, batch, key=None):
        """Minus the variational bound (`vlb_terms`) per example ``[B]``: a lower bound on log p(x), in nats.
        ``key`` draws the noise of each term (one sample per t)."""
        if key is None:
            raise UserError("DDPM.log_prob estimates the bound with noise: it needs a key")
        x0 = batch["image"] * 2.0 - 1.0
        label = batch.get("label") if self.config.num_classes else None
        terms = self.vlb_terms(params, x0, key, label)
        return -(terms["prior"] + terms["diffusion"] + terms["decoder"])


def _discretized_gaussian_log_prob(x, mean, std, half_bin: float = 1.0 / 255.0):
    """log of the N(mean, std^2) mass of each pixel's bin ``[x - 1/255, x + 1/255]`` (x on the grid of 256 levels
    in [-1, 1]; the bins at -1 and 1 extend to -inf and +inf), per pixel."""
    from jax.scipy.special import log_ndtr

    upper = (x - mean + half_bin) / std
    lower = (x - mean - half_bin) / std
    log_cdf_upper = log_ndtr(upper)
    log_sf_lower = log_ndtr(-lower)
    mid = jnp.log(jnp.maximum(jax.scipy.stats.norm.cdf(upper) - jax.scipy.stats.norm.cdf(lower), 1e-12))
    return jnp.where(x < -0.999, log_cdf_upper, jnp.where(x > 0.999, log_sf_lower, mid))


