"""Encoders and decoders of the VAE family (Flax NNX).

Encoders map images ``[B, H, W, C]`` (and an optional one-hot label ``[B, K]``) to the mean and log-variance of
q(z | x), each ``[B, D]``. Decoders map ``z [B, D]`` (and the label) to per-pixel logits ``[B, H, W, C]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.nn.layers import depth_to_space
from aigc_jax.nn.linear import add_bias, dense

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "gelu": jax.nn.gelu, "softplus": jax.nn.softplus}


def _cat(x: jax.Array, y: jax.Array | None) -> jax.Array:
    return x if y is None else jnp.concatenate([x, y.astype(x.dtype)], axis=-1)


def _linear(layer: nnx.Linear, h: jax.Array, out_dtype=None) -> jax.Array:
    """``layer(h)`` through `aigc_jax.nn.dense`: the product of ``h``'s dtype (float32 params cast to it, float32
    accumulation; in the train step, the backward that keeps bfloat16 products fast on XLA:CPU), returned and
    added to the bias in ``out_dtype`` (default ``h``'s)."""
    return add_bias(dense(h, layer.kernel[...], out_dtype=out_dtype), layer.bias[...])


class MLPEncoder(nnx.Module):
    """Dense layers with ``activation``, then a linear head to (mean, logvar). ``compute_dtype``: the products'
    dtype (float32 params are cast to it); the outputs are float32 (the head's float32 sums, unrounded)."""

    def __init__(self, image_shape, hidden, latent_dim, num_classes, activation, *, rngs: nnx.Rngs,
                 compute_dtype: str = "float32"):
        self.dtype = jnp.dtype(compute_dtype)
        sizes = [math.prod(image_shape) + num_classes, *hidden]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
        self.head = nnx.Linear(sizes[-1], 2 * latent_dim, rngs=rngs)
        self.act = ACTIVATIONS[activation]

    def __call__(self, x, y=None):
        h = _cat(x.reshape(x.shape[0], -1), y).astype(self.dtype)
        for layer in self.layers:
            h = self.act(_linear(layer, h))
        mean, logvar = jnp.split(_linear(self.head, h, jnp.float32), 2, axis=-1)
        return mean, logvar


class MLPDecoder(nnx.Module):
    """The encoder's mirror: dense layers, then per-pixel logits (float32) in the image's shape. With bfloat16
    compute, the first layer's product is float32 (it reads the latent) and the rest bfloat16."""

    def __init__(self, image_shape, hidden, latent_dim, num_classes, activation, *, rngs: nnx.Rngs,
                 compute_dtype: str = "float32"):
        self.dtype = jnp.dtype(compute_dtype)
        sizes = [latent_dim + num_classes, *reversed(hidden)]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
        self.out = nnx.Linear(sizes[-1], math.prod(image_shape), rngs=rngs)
        self.act = ACTIVATIONS[activation]
        self.image_shape = tuple(image_shape)

    def __call__(self, z, y=None):
        # The first layer reads the float32 latent (a small product): z's bits matter, rounding it costs quality.
        h = self.act(_linear(self.layers[0], _cat(z, y), self.dtype))
        for layer in self.layers[1:]:
            h = self.act(_linear(layer, h))
        return _linear(self.out, h, jnp.float32).reshape(z.shape[0], *self.image_shape)


class ConvEncoder(nnx.Module):
    """Strided 3x3 convolutions (each halves H and W), then a linear head. The label enters as extra channels."""

    def __init__(self, image_shape, channels, latent_dim, num_classes, activation, *, rngs: nnx.Rngs):
        h, w, c = image_shape
        chans = [c + num_classes, *channels]
        self.convs = nnx.List(
            [nnx.Conv(a, b, (3, 3), strides=2, padding="SAME", rngs=rngs) for a, b in zip(chans[:-1], chans[1:],
                                                                                            strict=True)]
        )
        for _ in channels:
            h, w = -(-h // 2), -(-w // 2)
        self.head = nnx.Linear(h * w * chans[-1], 2 * latent_dim, rngs=rngs)
        self.act = ACTIVATIONS[activation]

    def __call__(self, x, y=None):
        h = x
        if y is not None:
            h = jnp.concatenate([h, jnp.broadcast_to(y[:, None, None, :], (*h.shape[:3], y.shape[-1])).astype(
                h.dtype)], axis=-1)
        for conv in self.convs:
            h = self.act(conv(h))
        mean, logvar = jnp.split(self.head(h.reshape(h.shape[0], -1)), 2, axis=-1)
        return mean, logvar


class ConvDecoder(nnx.Module):
    """Linear to a small feature map, then per stage a 3x3 convolution to 4x the channels and a depth-to-space
    that doubles H and W; the last stage emits the image's logits. (Sub-pixel convolutions instead of transposed
    ones: the same function class, and several times faster under XLA on CPU.)"""

    def __init__(self, image_shape, channels, latent_dim, num_classes, activation, *, rngs: nnx.Rngs):
        h, w, c = image_shape
        for _ in channels:
            h, w = -(-h // 2), -(-w // 2)
        self.base_shape = (h, w, channels[-1])
        self.image_shape = tuple(image_shape)
        self.inp = nnx.Linear(latent_dim + num_classes, h * w * channels[-1], rngs=rngs)
        chans = list(reversed(channels))  # e.g. [64, 32]
        outs = [*chans[1:], c]  # e.g. [32, C]
        self.convs = nnx.List(
            [nnx.Conv(a, 4 * b, (3, 3), padding="SAME", rngs=rngs) for a, b in zip(chans, outs, strict=True)]
        )
        self.act = ACTIVATIONS[activation]

    def __call__(self, z, y=None):
        h = self.act(self.inp(_cat(z, y))).reshape(z.shape[0], *self.base_shape)
        for i, conv in enumerate(self.convs):
            h = depth_to_space(conv(h))
            if i < len(self.convs) - 1:
                h = self.act(h)
        H, W, _ = self.image_shape
        return h[:, :H, :W, :]
