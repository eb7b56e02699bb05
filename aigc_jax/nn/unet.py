"""A U-Net denoiser backbone and its blocks (Ronneberger et al. 2015, in the shape of Ho et al. 2020, appendix B).

``UNet(x [B, H, W, C], time [B], label [B] | None) -> [B, H, W, C_out]``:

- ``time`` is a float noise level per example (a DDPM step index 0..T-1, or a flow time scaled to 0..1000): a
  sinusoidal embedding (`timestep_embedding`, the transformer's positional code) then two dense layers, width
  ``4 * channels``; a class label adds a learned embedding to it (index ``num_classes`` is the "no label" class
  that classifier-free guidance trains with label dropout);
- resolution levels ``channel_mults``: at each, ``num_res_blocks`` `ResBlock` s (GroupNorm, SiLU, 3x3 conv, the
  time embedding added per channel, GroupNorm, SiLU, dropout, 3x3 conv, and a residual), self-attention
  (`SelfAttention2D`) at the resolutions in ``attention_resolutions``, then a stride-2 3x3 convolution down;
  a middle of ResBlock, attention, ResBlock; the way up mirrors it with ``num_res_blocks + 1`` blocks per level,
  each reading the matching skip activation concatenated on channels, and nearest-neighbour upsampling followed
  by a 3x3 convolution;
- the last convolution and the last convolution of every residual branch start at zero, so a fresh network is the
  identity map plus zero and predicts zero (DDPM's reference code initialises them the same way).

Spatial sizes need not be powers of two: 28 -> 14 -> 7 (SAME stride-2 convolutions) and back by 2x upsampling
needs each level's size to be even except the last. The blocks are reused by any family that needs them.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from aigc_jax.nn.layers import depth_to_space, dropout, space_to_depth


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """Sinusoidal embedding ``[B, dim]`` of float times ``[B]``: ``[sin(t w_i), cos(t w_i)]`` with frequencies
    ``w_i = max_period ** (-i / (dim / 2))``, ``i = 0..dim/2-1`` (Vaswani et al. 2017, as in DDPM)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def condition_embedding(net, time: jax.Array, label: jax.Array | None, dim: int) -> jax.Array:
    """The conditioning vector ``[B, E]`` that the U-Net and `aigc_jax.nn.mlp.ResidualMLP` add in every block:
    ``net.time2(silu(net.time1(timestep_embedding(time, dim))))``, plus ``net.label_embed(label)`` when ``net`` has
    a label embedding (``None`` otherwise), which then needs labels."""
    emb = net.time2(jax.nn.silu(net.time1(timestep_embedding(time, dim))))
    if net.label_embed is not None:
        if label is None:
            raise ValueError(f"this {type(net).__name__} is class-conditional: pass labels (num_classes = no label)")
        emb = emb + net.label_embed(label)
    return emb


def _groups(channels: int) -> int:
    """The GroupNorm group count: 32 as in DDPM where the channels allow it, else as many as divide them (>= 4
    channels per group)."""
    g = min(32, max(1, channels // 4))
    while channels % g:
        g -= 1
    return g


def _zero_conv(cin: int, cout: int, rngs: nnx.Rngs) -> nnx.Conv:
    return nnx.Conv(cin, cout, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)


class ResBlock(nnx.Module):
    """``x [B, H, W, Cin], temb [B, E] -> [B, H, W, Cout]``: two 3x3 convolutions with the time embedding added
    between them, dropout before the second, and a 1x1 projection on the residual where the channels change."""

    def __init__(self, cin: int, cout: int, temb_dim: int, dropout_rate: float, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(cin, num_groups=_groups(cin), rngs=rngs)
        self.conv1 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
        self.temb = nnx.Linear(temb_dim, cout, rngs=rngs)
        self.norm2 = nnx.GroupNorm(cout, num_groups=_groups(cout), rngs=rngs)
        self.conv2 = _zero_conv(cout, cout, rngs)
        self.skip = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None
        self.dropout_rate = dropout_rate

    def __call__(self, x, temb, key=None):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.temb(jax.nn.silu(temb))[:, None, None, :]
        h = dropout(jax.nn.silu(self.norm2(h)), self.dropout_rate, key)
        h = self.conv2(h)
        return (x if self.skip is None else self.skip(x)) + h


class SelfAttention2D(nnx.Module):
    """Single-head self-attention over the ``H * W`` positions of ``[B, H, W, C]`` (GroupNorm first, a zero-
    initialised output projection, and a residual), as DDPM uses at 16x16."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.norm = nnx.GroupNorm(channels, num_groups=_groups(channels), rngs=rngs)
        self.qkv = nnx.Linear(channels, 3 * channels, rngs=rngs)
        self.out = nnx.Linear(channels, channels, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x):
        b, h, w, c = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(b, h * w, 3 * c), 3, axis=-1)
        weights = jax.nn.softmax(jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c), axis=-1)
        return x + self.out(jnp.einsum("bqk,bkc->bqc", weights, v)).reshape(b, h, w, c)


class Downsample(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), strides=2, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


class Upsample(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(channels, channels, (3, 3), rngs=rngs)

    def __call__(self, x):
        b, h, w, c = x.shape
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
        return self.conv(x)


class UNet(nnx.Module):
    """The denoiser ``(x, time, label) -> prediction`` of the module docstring; ``num_classes > 0`` adds the label
    embedding (``num_classes + 1`` rows, the last the null label)."""

    def __init__(self, image_shape: tuple[int, int, int], channels: int, channel_mults: tuple[int, ...],
                 num_res_blocks: int, attention_resolutions: tuple[int, ...], dropout_rate: float,
                 num_classes: int, *, patch_size: int = 1, out_channels: int | None = None, rngs: nnx.Rngs):
        h, w, c_img = image_shape
        if h % patch_size or w % patch_size:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {patch_size}")
        self.patch_size = patch_size
        c_in, h = c_img * patch_size ** 2, h // patch_size
        self.channels = channels
        temb = 4 * channels
        self.time1 = nnx.Linear(channels, temb, rngs=rngs)
        self.time2 = nnx.Linear(temb, temb, rngs=rngs)
        self.label_embed = nnx.Embed(num_classes + 1, temb, rngs=rngs) if num_classes else None
        self.conv_in = nnx.Conv(c_in, channels, (3, 3), rngs=rngs)
        down, skips, ch, res = [], [channels], channels, h
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                block = [ResBlock(ch, channels * mult, temb, dropout_rate, rngs=rngs)]
                ch = channels * mult
                if res in attention_resolutions:
                    block.append(SelfAttention2D(ch, rngs=rngs))
                down.append(nnx.List(block))
                skips.append(ch)
            if level != len(channel_mults) - 1:
                down.append(nnx.List([Downsample(ch, rngs=rngs)]))
                skips.append(ch)
                res = -(-res // 2)
        self.down = nnx.List(down)
        self.mid = nnx.List([ResBlock(ch, ch, temb, dropout_rate, rngs=rngs), SelfAttention2D(ch, rngs=rngs),
                             ResBlock(ch, ch, temb, dropout_rate, rngs=rngs)])
        up = []
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                block = [ResBlock(ch + skips.pop(), channels * mult, temb, dropout_rate, rngs=rngs)]
                ch = channels * mult
                if res in attention_resolutions:
                    block.append(SelfAttention2D(ch, rngs=rngs))
                up.append(nnx.List(block))
            if level != 0:
                up.append(nnx.List([Upsample(ch, rngs=rngs)]))
                res *= 2
        self.up = nnx.List(up)
        self.norm_out = nnx.GroupNorm(ch, num_groups=_groups(ch), rngs=rngs)
        self.conv_out = _zero_conv(ch, (out_channels or c_img) * patch_size ** 2, rngs)

    def __call__(self, x, time, label=None, key=None):
        emb = condition_embedding(self, time, label, self.channels)
        count = [0]

        def run(block, h):
            for layer in block:
                if isinstance(layer, ResBlock):
                    count[0] += 1
                    h = layer(h, emb, None if key is None else jax.random.fold_in(key, count[0]))
                else:
                    h = layer(h)
            return h

        if self.patch_size > 1:
            x = space_to_depth(x, self.patch_size)
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = run(block, h)
            hs.append(h)
        h = run(self.mid, h)
        for block in self.up:
            if isinstance(block[0], Upsample):
                h = block[0](h)
                # a level of odd size (7 from 14 -> 7) comes back one larger: crop to the skip's size
                h = h[:, :hs[-1].shape[1], :hs[-1].shape[2]]
            else:
                h = run(block, jnp.concatenate([h, hs.pop()], axis=-1))
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        return depth_to_space(out, self.patch_size) if self.patch_size > 1 else out
