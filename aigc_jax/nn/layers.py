"""Small layers shared by the model families: dropout, im2col patches, sub-pixel upsampling, convolution as
a matmul."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout (Srivastava et al. 2014): each element of ``x`` is kept with probability ``1 - rate`` and
    scaled by ``1 / (1 - rate)``, else zeroed; same shape and dtype as ``x``. ``rate == 0`` or ``key is None``
    (evaluation) is the identity."""
    if rate == 0.0 or key is None:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def patches(x: jax.Array, kh: int, kw: int, strides: tuple[int, int] = (1, 1)) -> jax.Array:
    """The ``kh x kw`` patches of a VALID convolution (im2col): ``x [B, H, W, C] -> [B, Ho, Wo, kh * kw * C]`` with
    ``Ho = (H - kh) // sh + 1`` and ``Wo = (W - kw) // sw + 1``. The last axis is ordered ``(i, j, c)``, as a
    ``[kh, kw, C, C_out]`` kernel reshaped to ``[kh * kw * C, C_out]``, so ``patches(x, ...) @ kernel.reshape(-1,
    C_out)`` is the convolution. Pad ``x`` first for other paddings."""
    sh, sw = strides
    if kh == kw == sh == sw == 1:
        return x
    _, h, w, _ = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :] for i in range(kh) for j in range(kw)]
    return jnp.concatenate(cols, axis=-1)


def depth_to_space(x: jax.Array, r: int = 2) -> jax.Array:
    """``[B, H, W, r*r*C] -> [B, r*H, r*W, C]`` (sub-pixel upsampling, Shi et al. 2016)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, r, r, c // (r * r))
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * r, w * r, c // (r * r))


def space_to_depth(x: jax.Array, r: int = 2) -> jax.Array:
    """``[B, r*H, r*W, C] -> [B, H, W, r*r*C]``, the inverse of `depth_to_space` (non-overlapping r x r patches
    on the channel axis, as a patch-size-r stem reads them)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // r, r, w // r, r, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h // r, w // r, r * r * c)


def conv_as_matmul(conv, x: jax.Array) -> jax.Array:
    """``conv(x)`` for an ``nnx.Conv`` (NHWC, no dilation or groups), computed as an explicit patch matrix times the
    reshaped kernel: the `patches` of the padded input (the ``kh * kw`` strided slices concatenated on the channel
    axis in the kernel's ``(i, j, c)`` order) multiplied by ``kernel.reshape(kh * kw * C_in, C_out)``.

    The same function and parameters as ``conv(x)``; only the lowering differs. Under XLA:CPU the gradients of a
    strided convolution, and above all the second-order gradients that a gradient penalty takes, run several times
    faster as slices and one matmul than as convolution kernels.
    """
    kh, kw = conv.kernel_size
    sh, sw = (conv.strides, conv.strides) if isinstance(conv.strides, int) else conv.strides
    if conv.kernel_dilation not in (1, (1, 1), None) or conv.input_dilation not in (1, (1, 1), None) or \
            conv.feature_group_count != 1:
        raise ValueError("conv_as_matmul supports convolutions without dilation or feature groups")
    _, h, w, c = x.shape
    pad = conv.padding
    if pad == "VALID":
        pad = ((0, 0), (0, 0))
    elif pad == "SAME":
        pad = tuple(_same_pad(n, k, s) for n, k, s in ((h, kh, sh), (w, kw, sw)))
    elif isinstance(pad, str):
        raise ValueError(f"conv_as_matmul: padding {pad!r} not supported (explicit pairs, SAME or VALID)")
    elif isinstance(pad, int):
        pad = ((pad, pad), (pad, pad))
    else:
        pad = tuple((p, p) if isinstance(p, int) else tuple(p) for p in pad)
    (pt, pb), (pl, pr) = pad
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    kernel = conv.kernel[...]
    y = patches(xp, kh, kw, (sh, sw)) @ kernel.reshape(kh * kw * c, kernel.shape[-1])
    return y if conv.bias is None else y + conv.bias[...].reshape(1, 1, 1, -1)


def _same_pad(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class ParamKeys:
    """The parameter keys of ``nnx.Rngs(key)`` without its traced counter: ``params()`` returns
    ``fold_in(key, i)`` for the i-th call, exactly the key ``nnx.Rngs(key).params()`` returns, so a module built
    with either has the same parameters. Pass it as ``rngs=`` to modules that only draw parameter keys.

    Why: ``nnx.Rngs`` keeps its count in a Variable, and each update under a trace (``jax.jit``/``eval_shape`` of
    an init) asks the traced value for its ``sharding``; a tracer answers with an error message whose origin search
    walks every equation traced so far. Building a model then costs time quadratic in its number of layers (the
    CIFAR-10 U-Net's init traced in ~2.8 s instead of ~0.4 s). Here the count is a Python integer."""

    def __init__(self, key):
        self._key = jax.random.key(key) if isinstance(key, int) else key
        self._count = 0

    def params(self) -> jax.Array:
        key = jax.random.fold_in(self._key, self._count)
        self._count += 1
        return key
