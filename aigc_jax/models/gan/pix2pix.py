"""pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks") on paired tasks
derived from the batch's own images, as two players of the one trainer.

The pair ``(x, y)`` is built inside the model from the target ``y = batch["image"]`` (float ``[B, H, W, C]`` in
[0, 1]) by `make_input`:

- ``task="upsample4"`` (4x super-resolution): ``x = nearest_up4(area_down4(y))``: the target averaged over 4x4
  blocks (28x28 -> 7x7), then each low-resolution pixel repeated over its 4x4 block, so ``x`` has the target's size
  and carries exactly the 7x7 information (no interpolation is baked into the input; the U-Net learns it);
- ``task="colorize"``: ``x = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601 luminance), ``[B, H, W, 1]``.

Networks (Flax NNX, run as pure functions over plain pytrees, like the GAN family):

- generator: a U-Net. Encoder stages are 4x4 stride-2 convolutions, each preceded by LeakyReLU(0.2) (but the first)
  and followed by batch norm (but the first). Decoder stages mirror them: ReLU, a 3x3 convolution to 4x the
  channels and a depth-to-space (sub-pixel upsampling, several times faster than a transposed convolution on
  XLA:CPU), batch norm, dropout(0.5) on the ``dropout_layers`` innermost stages (the paper's only noise source,
  applied in training and, as in the paper, at test time when ``test_dropout``), then concatenation with the
  encoder's features of the same resolution (the skip connection). The outermost stage ends in tanh, mapped to
  [0, 1] for samples. Batch norm keeps running statistics (``model_state["g_stats"]``, updated by generator
  updates) and uses them at test time: outputs then depend on their own input only, not on the rest of the batch
  (the paper trains at batch size 1, where test-time batch statistics are instance norm; at batch 64 that would
  make a test image's output depend on its batch-mates).
- discriminator: a PatchGAN on ``concat(x, y)`` along channels. 4x4 convolutions with padding 1: stride 2 for all
  but the last of ``d_channels``, stride 1 for the last, then a stride-1 convolution to one logit per patch;
  LeakyReLU(0.2), batch norm (batch statistics) but on the first. The paper's 70x70 PatchGAN is
  ``d_channels=(64, 128, 256, 512)``; ``(32, 64, 128)`` has a 34x34 receptive field, enough at 28x28 and 32x32.

Objective (``l`` the non-saturating loss of `aigc_jax.models.gan.losses`, averaged over every patch of the batch):
    D minimises  (softplus(-D(x, y)) + softplus(D(x, G(x)))) / 2      (halved, as in the paper, to slow D)
    G minimises  softplus(-D(x, G(x))) + l1_weight * mean |G(x) - y|  (the L1 in the networks' [-1, 1] units)
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import Condition, Extras, GenerativeModel, ImageToImage, ModelSpec, SeparateSamplingWeights
from aigc_jax.core.errors import UserError
from aigc_jax.models.gan import losses
from aigc_jax.models.gan.networks import BatchStatNorm, leaky_stack
from aigc_jax.nn.layers import ParamKeys, depth_to_space, dropout

TASKS = ("upsample4", "colorize")
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601
FACTOR = 4  # the upsample4 task's scale


# -- the paired tasks, as pure functions ---------------------------------------------------------------------------
def area_downsample(y: jax.Array, factor: int = FACTOR) -> jax.Array:
    """``[B, H, W, C] -> [B, H/f, W/f, C]``: the mean of each f x f block."""
    b, h, w, c = y.shape
    return y.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def nearest_upsample(x: jax.Array, factor: int = FACTOR) -> jax.Array:
    """``[B, h, w, C] -> [B, f*h, f*w, C]``: each pixel repeated over an f x f block."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def luminance(y: jax.Array) -> jax.Array:
    """``[B, H, W, 3] -> [B, H, W, 1]``, ITU-R BT.601 weights."""
    return (y @ jnp.asarray(LUMA, y.dtype))[..., None]


def make_input(target: jax.Array, task: str) -> jax.Array:
    """The generator's input for ``target`` ``[B, H, W, C]`` in [0, 1]: ``[B, H, W, C_in]`` in [0, 1]."""
    if task == "upsample4":
        return nearest_upsample(area_downsample(target))
    if task == "colorize":
        return luminance(target)
    raise ValueError(f"unknown pix2pix task {task!r}: expected one of {TASKS}")


def baseline(target: jax.Array, task: str) -> jax.Array:
    """The non-learned reference output ``[B, H, W, C]`` in [0, 1]: bicubic upsampling of the 7x7 image
    (`jax.image.resize`, clipped to [0, 1]) for upsample4, the luminance in every channel for colorize."""
    if task == "upsample4":
        return jnp.clip(jax.image.resize(area_downsample(target), target.shape, method="bicubic"), 0.0, 1.0)
    if task == "colorize":
        return jnp.broadcast_to(luminance(target), target.shape)
    raise ValueError(f"unknown pix2pix task {task!r}: expected one of {TASKS}")


@dataclasses.dataclass(frozen=True)
class Pix2PixConfig(ModelConfig):
    image_shape: tuple[int, ...] = (28, 28, 1)  # the target's H, W, C
    task: Literal["upsample4", "colorize"] = "upsample4"
    g_channels: tuple[int, ...] = (32, 64)  # U-Net encoder stages' outputs, outermost first (depth = length)
    d_channels: tuple[int, ...] = (32, 64, 128)  # PatchGAN: stride-2 convolutions, then the last at stride 1
    dropout: float = 0.5  # rate on the innermost decoder stages
    dropout_layers: int = 1  # how many decoder stages (innermost first, not the output stage) have dropout
    test_dropout: bool = True  # the paper's test-time dropout in `sample` and `eval_metrics`
    l1_weight: float = 100.0  # lambda of the L1 term in G's loss

    def validate(self) -> None:
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise UserError(f"bad model.image_shape {self.image_shape}: expected H,W,C")
        h, w, c = self.image_shape
        if self.task not in TASKS:
            raise UserError(f"model.task={self.task!r}: expected one of {', '.join(TASKS)}")
        if self.task == "colorize" and c != 3:
            raise UserError(f"model.task=colorize needs colour targets (C=3), model.image_shape is {self.image_shape}")
        if self.task == "upsample4" and (h % FACTOR or w % FACTOR):
            raise UserError(f"model.task=upsample4 needs H and W divisible by {FACTOR}, got {self.image_shape[:2]}")
        if not self.g_channels or len(self.d_channels) < 2:
            raise UserError("model.g_channels needs at least one stage and model.d_channels at least two")
        s = 2 ** len(self.g_channels)
        if h % s or w % s:
            raise UserError(f"model.image_shape {self.image_shape[:2]} must be divisible by 2^len(g_channels) = {s}")
        if not 0.0 <= self.dropout < 1.0 or not 0 <= self.dropout_layers < len(self.g_channels):
            raise UserError(f"model.dropout must be in [0, 1) and model.dropout_layers in 0..{len(self.g_channels) - 1}"
                            " (the outermost decoder stage, the output, has none)")
        if self.l1_weight < 0:
            raise UserError("model.l1_weight must be >= 0")
        side = min(h, w)
        for _ in self.d_channels[:-1]:
            side //= 2
        if side - 2 < 1:  # the two stride-1 4x4 convolutions (padding 1) each shrink the map by one
            raise UserError(f"model.d_channels {self.d_channels}: too many stride-2 stages for {self.image_shape[:2]}")


class UNet(nnx.Module):
    """``[B, H, W, C_in]`` in [-1, 1] -> ``[B, H, W, C_out]`` in [-1, 1]; see the module docstring."""

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...], dropout: float,
                 dropout_layers: int, *, rngs: nnx.Rngs):
        depth = len(channels)
        enc_in = [in_channels, *channels[:-1]]
        self.down = nnx.List([nnx.Conv(a, b, (4, 4), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
                              for a, b in zip(enc_in, channels, strict=True)])
        self.down_norms = nnx.List([None] + [nnx.BatchNorm(b, momentum=0.9, epsilon=1e-5, rngs=rngs)
                                             for b in channels[1:]])
        # Decoder stage k (k = depth-1 innermost ... 0 outermost) reads channels[k] features (the bottleneck, or the
        # previous stage's output concatenated with the skip) and outputs channels[k-1] (out_channels for k = 0).
        dec_in = [channels[k] * (1 if k == depth - 1 else 2) for k in range(depth)]
        dec_out = [out_channels, *channels[:-1]]
        self.up = nnx.List([nnx.Conv(dec_in[k], 4 * dec_out[k], (3, 3), padding="SAME", rngs=rngs)
                            for k in range(depth)])
        self.up_norms = nnx.List([None] + [nnx.BatchNorm(dec_out[k], momentum=0.9, epsilon=1e-5, rngs=rngs)
                                           for k in range(1, depth)])
        self.dropout = dropout
        self.dropout_stages = tuple(range(depth - dropout_layers, depth))

    def __call__(self, x, *, train: bool, dropout_key: jax.Array | None = None):
        skips = []
        h = x
        for k, (conv, norm) in enumerate(zip(self.down, self.down_norms, strict=True)):
            if k > 0:
                h = jax.nn.leaky_relu(h, 0.2)
            h = conv(h)  # [B, H / 2^(k+1), W / 2^(k+1), channels[k]]
            if norm is not None:
                h = norm(h, use_running_average=not train)
            skips.append(h)
        h = skips[-1]
        for k in reversed(range(len(self.up))):
            if k < len(self.up) - 1:
                h = jnp.concatenate([h, skips[k]], axis=-1)  # the skip connection
            h = depth_to_space(self.up[k](jax.nn.relu(h)))  # [B, H / 2^k, W / 2^k, dec_out[k]]
            if k == 0:
                return jnp.tanh(h)
            h = self.up_norms[k](h, use_running_average=not train)
            if k in self.dropout_stages and dropout_key is not None:
                h = dropout(h, self.dropout, jax.random.fold_in(dropout_key, k))
        raise AssertionError("unreachable")


class PatchDiscriminator(nnx.Module):
    """``[B, H, W, C_in + C_out]`` -> per-patch logits ``[B, H', W']``; see the module docstring."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], *, rngs: nnx.Rngs):
        chans = [in_channels, *channels]
        strides = [2] * (len(channels) - 1) + [1]
        self.convs = nnx.List([nnx.Conv(a, b, (4, 4), strides=s, padding=((1, 1), (1, 1)), rngs=rngs)
                               for a, b, s in zip(chans[:-1], chans[1:], strides, strict=True)])
        self.norms = nnx.List([None] + [BatchStatNorm(b) for b in channels[1:]])
        self.out = nnx.Conv(channels[-1], 1, (4, 4), padding=((1, 1), (1, 1)), rngs=rngs)

    def __call__(self, xy):
        return self.out(leaky_stack(self.convs, self.norms, xy))[..., 0]


class Pix2Pix(GenerativeModel, ImageToImage, SeparateSamplingWeights, Extras):
    """Pure functions of pix2pix over params ``{"generator": ..., "discriminator": ...}``."""

    players = ("discriminator", "generator")

    def __init__(self, config: Pix2PixConfig):
        self.config = config
        self.in_channels = 1 if config.task == "colorize" else config.image_shape[-1]
        h, w, _ = config.image_shape
        # `aigc-jax eval`: test L1 and PSNR (``loss``) and the non-learned baseline's
        self._spec = ModelSpec(
            output="image", shape=tuple(config.image_shape),
            conditions=(Condition("input", "image", dtype="float32", required=True, shape=(h, w, self.in_channels),
                                  doc="the images to translate, in the model's input format (make_input)"),))
        self.baseline_name = "l1_bicubic" if config.task == "upsample4" else "l1_gray"
        gen = nnx.eval_shape(lambda: self._make_generator(ParamKeys(0)))
        self._g_graph, _, _ = nnx.split(gen, nnx.Param, nnx.BatchStat)
        disc = nnx.eval_shape(lambda: self._make_discriminator(ParamKeys(0)))
        self._d_graph, _ = nnx.split(disc, nnx.Param)

    def _make_generator(self, rngs):
        c = self.config
        return UNet(self.in_channels, c.image_shape[-1], c.g_channels, c.dropout, c.dropout_layers, rngs=rngs)

    def _make_discriminator(self, rngs):
        c = self.config
        return PatchDiscriminator(self.in_channels + c.image_shape[-1], c.d_channels, rngs=rngs)

    # -- the paired task -----------------------------------------------------------------------------------------
    def make_input(self, target: jax.Array) -> jax.Array:
        """The generator's input ``[B, H, W, C_in]`` in [0, 1] for targets ``[B, H, W, C]`` in [0, 1]."""
        return make_input(target, self.config.task)

    def input_from_images(self, images) -> jax.Array:
        """User images float ``[N, h, w, c]`` in [0, 1] (c = 1 or 3) -> the model's input ``[N, H, W, C_in]``.

        upsample4 takes a ``(H/4, W/4)`` low-resolution image (repeated 4x) or an ``(H, W)`` image (degraded by
        `make_input`); colorize takes any size (resized to ``(H, W)``) and uses its luminance.
        """
        x = jnp.asarray(images, jnp.float32)
        h, w, c = self.config.image_shape
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise UserError(f"input images must be [N, h, w, 1 or 3], got shape {tuple(x.shape)}")
        if x.shape[-1] == 3 and self.in_channels == 1:
            x = luminance(x)
        elif x.shape[-1] != self.in_channels:
            raise UserError(f"{self.config.task} input needs {self.in_channels}-channel images, got {x.shape[-1]}")
        size = tuple(x.shape[1:3])
        if self.config.task == "upsample4":
            if size == (h // FACTOR, w // FACTOR):
                return nearest_upsample(x)
            if size == (h, w):
                return make_input(x, "upsample4")
            raise UserError(f"upsample4 input images must be {h // FACTOR}x{w // FACTOR} (low resolution) or {h}x{w},"
                            f" got {size[0]}x{size[1]}")
        if size != (h, w):
            x = jnp.clip(jax.image.resize(x, (x.shape[0], h, w, 1), method="bicubic", antialias=True), 0.0, 1.0)
        return x

    def _display_input(self, x: jax.Array) -> jax.Array:
        """An input shown beside the outputs: as many channels as the target."""
        return jnp.broadcast_to(x, (*x.shape[:-1], self.config.image_shape[-1]))

    # -- networks as pure functions --------------------------------------------------------------------------------
    def generate(self, g_params, g_stats, x, *, train: bool, dropout_key: jax.Array | None = None):
        """Outputs in [-1, 1] ``[B, H, W, C]`` for inputs ``x`` in [0, 1] ``[B, H, W, C_in]``, and the updated
        running statistics (unchanged unless ``train``); dropout only with a ``dropout_key``."""
        net = nnx.merge(self._g_graph, g_params, g_stats)
        y = net(x * 2.0 - 1.0, train=train, dropout_key=dropout_key)
        return y, nnx.to_pure_dict(nnx.state(net, nnx.BatchStat))

    def discriminate(self, d_params, x, y):
        """Per-patch logits ``[B, H', W']`` for inputs ``x`` in [0, 1] and outputs ``y`` in [-1, 1]."""
        return nnx.merge(self._d_graph, d_params)(jnp.concatenate([x * 2.0 - 1.0, y], axis=-1))

    # -- the contract ----------------------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def init(self, key):
        kg, kd = jax.random.split(key)
        gen, disc = self._make_generator(ParamKeys(kg)), self._make_discriminator(ParamKeys(kd))
        params = {"generator": nnx.to_pure_dict(nnx.state(gen, nnx.Param)),
                  "discriminator": nnx.to_pure_dict(nnx.state(disc, nnx.Param))}
        return params, {"g_stats": nnx.to_pure_dict(nnx.state(gen, nnx.BatchStat))}

    def loss(self, player, params, state, batch, key):
        target = batch["image"]
        x, y = self.make_input(target), target * 2.0 - 1.0
        if player == "discriminator":
            fake, _ = self.generate(params["generator"], state["g_stats"], x, train=True, dropout_key=key)
            fake = jax.lax.stop_gradient(fake)
            # Real and fake pairs in separate forward passes: D's batch norm sees each batch on its own.
            d_real = self.discriminate(params["discriminator"], x, y)
            d_fake = self.discriminate(params["discriminator"], x, fake)
            loss = 0.5 * losses.discriminator_loss("non_saturating", d_real.reshape(-1), d_fake.reshape(-1))
            return loss, ({"d_real": jnp.mean(d_real), "d_fake": jnp.mean(d_fake)}, state)
        if player == "generator":
            fake, g_stats = self.generate(params["generator"], state["g_stats"], x, train=True, dropout_key=key)
            d_fake = self.discriminate(params["discriminator"], x, fake)
            gan = losses.generator_loss("non_saturating", d_fake.reshape(-1))
            l1 = jnp.mean(jnp.abs(fake - y))
            loss = gan + self.config.l1_weight * l1
            return loss, ({"gan": gan, "l1": l1, "d_fake": jnp.mean(d_fake)}, {**state, "g_stats": g_stats})
        raise ValueError(f"unknown player {player!r}")

    def sampling_params(self, params, state):
        """The generator and its running statistics (the only weights `sample` needs)."""
        return {"generator": params["generator"], "generator_stats": state["g_stats"]}

    def translate(self, params, key, x):
        """``x`` ``[N, H, W, C_in]`` in [0, 1] -> ``[N, H, W, C]`` in [0, 1]; ``params`` from `sampling_params`."""
        if "generator_stats" not in params:
            raise UserError("Pix2Pix.sample takes the sampling params (aigc_jax.load(...).params, or "
                            "sampling_params(model, params, state)): the generator and its running statistics")
        y, _ = self.generate(params["generator"], params["generator_stats"], x, train=False,
                             dropout_key=key if self.config.test_dropout else None)
        return (y + 1.0) / 2.0

    def _sample(self, params, key, num: int, input):  # noqa: A002  (the condition's name)
        """Translate ``input`` images ``[num, H, W, C_in]`` (in [0, 1], in the model's input format: see
        `make_input` and `input_from_images`) into outputs ``[num, H, W, C]`` in [0, 1]."""
        return self.translate(params, key, input)

    def grid_images(self, params, state, batch, key):
        """Panels ``[B, 3, H, W, C]`` in [0, 1]: input | output | target for each test example of ``batch``."""
        target = batch["image"]
        x = self.make_input(target)
        out = self.translate(self.sampling_params(params, state), key, x)
        return jnp.stack([self._display_input(x), out, target], axis=1)

    def eval_metrics(self, params, state, batch, key):
        """Per test example, mean absolute errors in [0, 1] pixel units: ``l1`` of the generator's output (also
        ``loss``, so checkpoints keep the best) and of the non-learned `baseline` (``l1_bicubic`` or ``l1_gray``),
        and the PSNR in dB of each (``psnr``, ``psnr_bicubic`` or ``psnr_gray``; peak 1)."""
        target = batch["image"]
        out = self.translate(self.sampling_params(params, state), key, self.make_input(target))
        l1 = jnp.mean(jnp.abs(out - target), axis=(1, 2, 3))
        base_out = baseline(target, self.config.task)
        base = jnp.mean(jnp.abs(base_out - target), axis=(1, 2, 3))
        return {"loss": l1, "l1": l1, self.baseline_name: base, "psnr": _psnr(out, target),
                f"psnr_{self.baseline_name[3:]}": _psnr(base_out, target)}

    def extras(self) -> dict:
        return {"make_input": self.make_input, "input_from_images": self.input_from_images,
                "generate": self.generate, "discriminate": self.discriminate, "translate": self.translate}


def _psnr(x: jax.Array, target: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio per example ``[B]`` in dB for images in [0, 1]: ``10 log10(1 / MSE)`` (MSE
    floored at 1e-10, so identical images give 100 dB instead of infinity)."""
    mse = jnp.mean(jnp.square(x - target), axis=(1, 2, 3))
    return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))
