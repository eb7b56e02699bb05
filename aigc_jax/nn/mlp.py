"""A residual MLP denoiser for vectors: the U-Net's counterpart where the data has no spatial axes (the latents of
an autoencoder, as in latent diffusion, Rombach et al. 2022, here with a flat latent).

``ResidualMLP(x [B, D], time [B], label [B] | None) -> [B, D]``:

- ``time`` is a float noise level per example (as the U-Net takes it): its sinusoidal embedding, then two dense
  layers of ``width``; a class label adds a learned embedding (index ``num_classes`` is the "no label" class of
  classifier-free guidance): `aigc_jax.nn.unet.condition_embedding`, shared with the U-Net;
- a dense layer to ``width``, then ``depth`` pre-norm residual blocks (LayerNorm, the time embedding added, dense
  to ``2 * width``, SiLU, dropout, dense back to ``width`` initialised at zero), then LayerNorm, SiLU and a
  zero-initialised dense layer to ``D``: a fresh network predicts zero, as the U-Net does. Each block reads the
  embedding through its own first dense layer (``fc1(norm(h) + emb) = fc1(norm(h)) + fc1(emb)``), which costs
  nothing beside a separate projection per block, the largest product of the block otherwise.
"""

from __future__ import annotations

import jax
from flax import nnx

from aigc_jax.nn.layers import dropout
from aigc_jax.nn.unet import condition_embedding


class MLPBlock(nnx.Module):
    """``h [B, W], emb [B, W] -> [B, W]``: ``h + fc2(dropout(silu(fc1(norm(h) + emb))))``."""

    def __init__(self, width: int, dropout_rate: float, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.fc1 = nnx.Linear(width, 2 * width, rngs=rngs)
        self.fc2 = nnx.Linear(2 * width, width, kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.dropout_rate = dropout_rate

    def __call__(self, h, emb, key=None):
        y = self.fc1(self.norm(h) + emb)
        return h + self.fc2(dropout(jax.nn.silu(y), self.dropout_rate, key))


class ResidualMLP(nnx.Module):
    """The denoiser ``(x, time, label) -> prediction`` of the module docstring for vectors of ``dim``."""

    def __init__(self, dim: int, width: int, depth: int, dropout_rate: float, num_classes: int, *,
                 rngs: nnx.Rngs):
        self.width = width
        self.time1 = nnx.Linear(width, width, rngs=rngs)
        self.time2 = nnx.Linear(width, width, rngs=rngs)
        self.label_embed = nnx.Embed(num_classes + 1, width, rngs=rngs) if num_classes else None
        self.inp = nnx.Linear(dim, width, rngs=rngs)
        self.blocks = nnx.List([MLPBlock(width, dropout_rate, rngs=rngs) for _ in range(depth)])
        self.norm_out = nnx.LayerNorm(width, rngs=rngs)
        self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, time, label=None, key=None):
        emb = condition_embedding(self, time, label, self.width)
        h = self.inp(x)
        for i, block in enumerate(self.blocks):
            h = block(h, emb, None if key is None else jax.random.fold_in(key, i))
        return self.out(jax.nn.silu(self.norm_out(h)))
