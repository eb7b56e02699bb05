"""Small shape utilities shared by the convolutional families."""

from __future__ import annotations

import jax


def depth_to_space(x: jax.Array, r: int = 2) -> jax.Array:
    """``[B, H, W, r*r*C] -> [B, r*H, r*W, C]`` (sub-pixel upsampling, Shi et al. 2016)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, r, r, c // (r * r))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * r, w * r, c // (r * r))
