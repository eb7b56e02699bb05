"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

Two stacks remove the blind spot of a plain masked-convolution stack:
- the vertical stack sees every pixel in the rows above (a ``(k//2 + 1) x k`` convolution over the current and
  upper rows, shifted down one row before it feeds the horizontal stack),
- the horizontal stack sees the pixels to the left in the current row (a ``1 x (k//2 + 1)`` convolution; the
  first layer is shifted right by one pixel: mask A, later layers include the current position: mask B).
Each layer applies the gated unit ``tanh(f) * sigmoid(g)``, with an optional class embedding added to ``f`` and
``g`` (conditional PixelCNN). The head maps the horizontal stack to one Bernoulli logit per pixel, so
``log p(x) = sum_i log p(x_i | x_<i)`` in raster order. Images are NHWC in {0, 1}.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import Condition, Extras, GenerativeModel, Likelihood, ModelSpec, bits_per_dim
from aigc_jax.core.errors import UserError
from aigc_jax.nn.layers import ParamKeys, patches
from aigc_jax.nn.linear import dense


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig(ModelConfig):
    image_shape: tuple[int, ...] = (28, 28, 1)
    layers: int = 8  # gated layers (the first uses mask A)
    channels: int = 64
    kernel: int = 5  # k: vertical kernel (k//2 + 1) x k, horizontal 1 x (k//2 + 1)
    head_channels: int = 256
    num_classes: int = 0  # > 0: class-conditional
    needs_binary_data = True  # (a class attribute, not a config field) Bernoulli pixels

    def validate(self) -> None:
        if len(self.image_shape) != 3 or self.image_shape[2] != 1:
            raise UserError(f"model.image_shape {self.image_shape}: the Bernoulli PixelCNN models H,W,1 images")
        if self.layers < 1 or self.channels < 1 or self.head_channels < 1 or self.num_classes < 0:
            raise UserError("model.layers, channels and head_channels must be >= 1, num_classes >= 0")
        if self.kernel < 3 or self.kernel % 2 == 0:
            raise UserError(f"bad value {self.kernel} for model.kernel: expected an odd integer >= 3")


def _shift_down(x):
    """Row i receives row i - 1 (row 0 receives zeros): [B, H, W, C]."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def _shift_right(x):
    return jnp.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))[:, :, :-1]


class Conv(nnx.Module):
    """A VALID convolution computed as one matrix product over gathered patches (im2col).

    ``x [B, H + kh - 1, W + kw - 1, Cin] -> [B, H, W, Cout]``. On XLA:CPU this runs several times faster than
    `lax.conv_general_dilated` for these small kernels (mostly in the backward pass), and the matmul goes through
    `aigc_jax.nn.linear.dense`.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], rngs: nnx.Rngs):
        kh, kw = kernel
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kh * kw * cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.kh, self.kw = kh, kw

    def __call__(self, x):
        out = dense(patches(x, self.kh, self.kw), self.kernel[...])  # [B, H, W, kh * kw * Cin] -> [B, H, W, Cout]
        return out + self.bias[...].reshape(1, 1, 1, -1)


class GatedLayer(nnx.Module):
    def __init__(self, cin: int, c: int, k: int, first: bool, num_classes: int, rngs: nnx.Rngs):
        self.kv, self.kh = k // 2 + 1, k // 2 + 1
        self.k = k
        self.first = first
        self.v_conv = Conv(cin, 2 * c, (self.kv, k), rngs)
        self.h_conv = Conv(cin, 2 * c, (1, self.kh), rngs)
        self.v_to_h = Conv(2 * c, 2 * c, (1, 1), rngs)
        self.h_out = Conv(c, c, (1, 1), rngs)
        self.cond = nnx.Embed(num_classes, 4 * c, rngs=rngs) if num_classes else None
        self.c = c

    def __call__(self, v, h, label=None):
        c, k = self.c, self.k
        # Vertical: rows i - k//2 .. i, columns j - k//2 .. j + k//2.
        v_pre = self.v_conv(jnp.pad(v, ((0, 0), (self.kv - 1, 0), (k // 2, k // 2), (0, 0))))
        # Horizontal: columns j - k//2 .. j of the current row (shifted right in the first layer: mask A).
        h_in = _shift_right(h) if self.first else h
        h_pre = self.h_conv(jnp.pad(h_in, ((0, 0), (0, 0), (self.kh - 1, 0), (0, 0))))
        h_pre = h_pre + self.v_to_h(_shift_down(v_pre))  # only rows above reach the horizontal stack
        if self.cond is not None:
            e = self.cond(label)[:, None, None, :]  # [B, 1, 1, 4c]
            v_pre = v_pre + e[..., : 2 * c]
            h_pre = h_pre + e[..., 2 * c:]
        gate = lambda z: jnp.tanh(z[..., :c]) * jax.nn.sigmoid(z[..., c:])  # noqa: E731
        v_out = gate(v_pre)
        h_out = self.h_out(gate(h_pre))
        if not self.first:
            h_out = h_out + h  # residual in the horizontal stack
        return v_out, h_out


class PixelCNNNetwork(nnx.Module):
    def __init__(self, cfg: PixelCNNConfig, rngs: nnx.Rngs):
        cin = cfg.image_shape[2]
        self.layers = nnx.List([
            GatedLayer(cin if i == 0 else cfg.channels, cfg.channels, cfg.kernel, i == 0, cfg.num_classes, rngs)
            for i in range(cfg.layers)
        ])
        self.head1 = Conv(cfg.channels, cfg.head_channels, (1, 1), rngs)
        self.head2 = Conv(cfg.head_channels, cin, (1, 1), rngs)

    def __call__(self, x, label=None):
        v = h = x * 2.0 - 1.0
        for layer in self.layers:
            v, h = layer(v, h, label)
        return self.head2(jax.nn.relu(self.head1(jax.nn.relu(h))))  # logits [B, H, W, 1]


class PixelCNN(GenerativeModel, Likelihood, Extras):
    """Pure functions of a gated PixelCNN over plain-pytree params ``{"pixelcnn": {...}}``."""

    players = ("pixelcnn",)

    def __init__(self, config: PixelCNNConfig):
        self.config = config
        k = config.num_classes
        label = (Condition("label", "label", required=True, num_classes=k, doc="the class of each sample"),) if k \
            else ()
        # The loss is a mean of per-image NLLs with no randomness, no state and no statistics across images, so a
        # data-parallel step may differentiate per device and reduce once (`train.step.per_device_value_and_grad`).
        self._spec = ModelSpec(output="image", shape=tuple(config.image_shape), conditions=label,
                               data_dims=math.prod(config.image_shape),
                               metrics=("loss", "nll", "fid", "kid", "is", "pr", *(("label_accuracy",) if k else ())),
                               default_metrics=("loss", "nll"), per_example_loss=True)
        abstract = nnx.eval_shape(lambda: PixelCNNNetwork(config, ParamKeys(0)))
        self._graphdef, _ = nnx.split(abstract)

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def init(self, key):
        return {"pixelcnn": nnx.to_pure_dict(nnx.state(PixelCNNNetwork(self.config, ParamKeys(key))))}, {}

    def logits(self, params, x, label=None):
        if self.config.num_classes and label is None:
            raise ValueError("this conditional PixelCNN needs a label")
        return nnx.merge(self._graphdef, params["pixelcnn"])(x, label if self.config.num_classes else None)

    def log_prob(self, params, batch, key=None, num_samples=None, chunk=None):
        """Exact log p(x) per image ``[B]`` in nats (``key`` and the sample counts are unused: no latents)."""
        x = batch["image"]
        lg = self.logits(params, x, batch.get("label"))
        lp = x * jax.nn.log_sigmoid(lg) + (1 - x) * jax.nn.log_sigmoid(-lg)
        return lp.reshape(x.shape[0], -1).sum(-1)

    def loss(self, player, params, state, batch, key):
        nll = -self.log_prob(params, batch)
        loss = nll.mean()
        return loss, ({"bits_per_dim": bits_per_dim(loss, self._spec.data_dims)}, state)

    def eval_metrics(self, params, state, batch, key):
        return {"loss": -self.log_prob(params, batch)}

    def _sample(self, params, key, num: int, label=None):
        """Pixel by pixel in raster order, each a Bernoulli draw; one `lax.fori_loop` over the H*W pixels."""
        H, W, C = self.config.image_shape

        def body(i, img):
            r, c = i // W, i % W
            lg = self.logits(params, img, label)[:, r, c, :]  # [num, C]
            bit = jax.random.bernoulli(jax.random.fold_in(key, i), jax.nn.sigmoid(lg)).astype(jnp.float32)
            return img.at[:, r, c, :].set(bit)

        return jax.lax.fori_loop(0, H * W, body, jnp.zeros((num, H, W, C), jnp.float32))

    def extras(self) -> dict:
        return {"log_prob": self.log_prob, "logits": self.logits}
