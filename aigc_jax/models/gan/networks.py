"""Generator and discriminator networks of the GAN family (Flax NNX), DCGAN-style (Radford et al. 2015).

Generator: ``z [B, Z]`` -> optional hidden linear layers (as in InfoGAN's MNIST generator, Chen et al. 2016: dense
capacity is cheap next to convolutions) -> linear to a ``[H / 2^S, W / 2^S, g_channels[0]]`` map -> S stages, each a
3x3 convolution to 4x the next stage's channels and a depth-to-space (sub-pixel upsampling, Shi et al. 2016; the same
function class as a stride-2 transposed convolution and several times faster under XLA:CPU) -> tanh images in
[-1, 1]. Batch norm and ReLU between stages. A class-conditional generator adds a learned ``label_embed[y]`` to the
first linear layer's output: the same function as a one-hot label concatenated to ``z`` (one-hot times the kernel's
label rows is a row lookup), kept as its own parameter so that an unconditional generator's weights load into a
conditional one unchanged and only the embedding is new (``--init-from``).

Discriminator: S' stages of 4x4 stride-2 convolutions with LeakyReLU(0.2) (no normalisation on the first, as in
DCGAN), optionally a minibatch-standard-deviation feature map, optional hidden linear layers, then a linear
output on the resulting features ``phi(x)``. With classes, the projection discriminator
(Miyato & Koyama 2018) adds ``<embed(y), phi(x)>`` to the output.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.nn.layers import conv_as_matmul, depth_to_space


class BatchStatNorm(nnx.Module):
    """Batch normalisation that always uses the statistics of the batch it sees (a discriminator is only ever run
    in training), with a learned scale and shift per channel and no running averages."""

    def __init__(self, channels: int, eps: float = 1e-5):
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.eps = eps

    def __call__(self, x):
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axes, keepdims=True)
        var = jnp.var(x, axes, keepdims=True)
        shape = (1,) * (x.ndim - 1) + (-1,)
        return (x - mean) * jax.lax.rsqrt(var + self.eps) * self.scale[...].reshape(shape) + self.bias[...].reshape(
            shape)


def leaky_stack(layers, norms, h, apply=None):
    """``layer -> norm (if any) -> LeakyReLU(0.2)`` for each layer: the body of the DCGAN and PatchGAN
    discriminators. ``apply(layer, h)``, if given, replaces ``layer(h)``."""
    for layer, norm in zip(layers, norms, strict=True):
        h = layer(h) if apply is None else apply(layer, h)
        if norm is not None:
            h = norm(h)
        h = jax.nn.leaky_relu(h, 0.2)
    return h


def _norm(kind: str, channels: int, rngs: nnx.Rngs, *, running: bool):
    if kind == "none":
        return None
    if kind == "batch":
        # Generators keep running statistics for sampling; torch's default momentum (0.1) and eps.
        return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=rngs) if running else BatchStatNorm(channels)
    if kind == "layer":
        return nnx.LayerNorm(channels, reduction_axes=(-3, -2, -1), feature_axes=-1, rngs=rngs)
    raise ValueError(f"unknown normalisation {kind!r}")


def _rows_of(fan_in: int):
    """LeCun-normal init of a ``[rows, out]`` block as if it were part of a ``[fan_in, out]`` kernel."""
    def init(key, shape, dtype=jnp.float32):
        return nnx.initializers.variance_scaling(1.0 * shape[0] / fan_in, "fan_in", "truncated_normal")(
            key, shape, dtype)
    return init


class Generator(nnx.Module):
    def __init__(self, image_shape, latent_dim: int, channels: tuple[int, ...], norm: str, num_classes: int, *,
                 rngs: nnx.Rngs, hidden: tuple[int, ...] = ()):
        h, w, c = image_shape
        s = 2 ** len(channels)
        self.base = (h // s, w // s, channels[0])
        self.num_classes = num_classes
        sizes = [latent_dim, *hidden, self.base[0] * self.base[1] * channels[0]]
        # Rows of the first layer drawn as LeCun-normal over fan-in Z + classes, the concatenated layer's init.
        first = _rows_of(latent_dim + num_classes)
        self.hidden = nnx.List([nnx.Linear(a, b, kernel_init=first if i == 0 else nnx.initializers.lecun_normal(),
                                           rngs=rngs) for i, (a, b) in enumerate(zip(sizes[:-2], sizes[1:-1],
                                                                                     strict=True))])
        self.hidden_norms = nnx.List([_norm(norm, b, rngs, running=True) for b in hidden])
        self.inp = nnx.Linear(sizes[-2], sizes[-1], kernel_init=first if not hidden else
                              nnx.initializers.lecun_normal(), rngs=rngs)
        self.label_embed = (nnx.Embed(num_classes, sizes[1], embedding_init=_rows_of(latent_dim + num_classes),
                                      rngs=rngs) if num_classes else None)
        self.inp_norm = _norm(norm, channels[0], rngs, running=True)
        outs = [*channels[1:], c]
        self.convs = nnx.List([nnx.Conv(a, 4 * b, (3, 3), padding="SAME", rngs=rngs)
                               for a, b in zip(channels, outs, strict=True)])
        self.norms = nnx.List([_norm(norm, b, rngs, running=True) for b in outs[:-1]])

    def __call__(self, z, label=None, *, train: bool):
        h = z
        for i, (layer, norm) in enumerate(zip(self.hidden, self.hidden_norms, strict=True)):
            h = self._conditioned(layer(h), label) if i == 0 else layer(h)
            if norm is not None:
                h = norm(h, use_running_average=not train)
            h = jax.nn.relu(h)
        h = self.inp(h) if len(self.hidden) else self._conditioned(self.inp(h), label)
        h = h.reshape(z.shape[0], *self.base)
        if self.inp_norm is not None:
            h = self.inp_norm(h, use_running_average=not train)
        h = jax.nn.relu(h)
        for i, conv in enumerate(self.convs):
            h = depth_to_space(conv(h))  # [B, 2H, 2W, C_next]
            if i < len(self.norms):
                if self.norms[i] is not None:
                    h = self.norms[i](h, use_running_average=not train)
                h = jax.nn.relu(h)
        return jnp.tanh(h)

    def _conditioned(self, h, label):
        """The first layer's output plus the label's embedding row (conditional generators only)."""
        if self.label_embed is None:
            return h
        return h + self.label_embed(label).astype(h.dtype)


class Discriminator(nnx.Module):
    def __init__(self, image_shape, channels: tuple[int, ...], norm: str, num_classes: int, *, rngs: nnx.Rngs,
                 minibatch_std: bool = False, hidden: tuple[int, ...] = (), conv_impl: str = "xla"):
        h, w, c = image_shape
        self.minibatch_std = minibatch_std
        self.conv_impl = conv_impl
        chans = [c, *channels]
        self.convs = nnx.List([nnx.Conv(a, b, (4, 4), strides=2, padding=((1, 1), (1, 1)), rngs=rngs)
                               for a, b in zip(chans[:-1], chans[1:], strict=True)])
        self.norms = nnx.List([None] + [_norm(norm, b, rngs, running=False) for b in channels[1:]])
        for _ in channels:
            h, w = h // 2, w // 2
        sizes = [h * w * (channels[-1] + int(minibatch_std)), *hidden]
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
        self.hidden_norms = nnx.List([_norm(norm, b, rngs, running=False) if norm != "layer" else
                                      nnx.LayerNorm(b, rngs=rngs) for b in hidden])
        features = sizes[-1]
        self.out = nnx.Linear(features, 1, rngs=rngs)
        self.embed = nnx.Embed(num_classes, features, rngs=rngs) if num_classes else None

    def __call__(self, x, label=None):
        h = leaky_stack(self.convs, self.norms, x, conv_as_matmul if self.conv_impl == "matmul" else None)
        if self.minibatch_std:
            # One extra feature map: the features' standard deviation across the batch, averaged (Karras et al.
            # 2018); a generator that drops modes makes its batches visibly less varied than real ones.
            std = jnp.mean(jnp.sqrt(jnp.var(h, axis=0) + 1e-8))
            h = jnp.concatenate([h, jnp.full((*h.shape[:3], 1), std, h.dtype)], axis=-1)
        phi = leaky_stack(self.hidden, self.hidden_norms, h.reshape(h.shape[0], -1))  # [B, F]
        out = self.out(phi)[:, 0]
        if self.embed is not None:
            out = out + jnp.sum(self.embed(label) * phi, axis=-1)  # projection term <embed(y), phi(x)>
        return out
