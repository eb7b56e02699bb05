"""The FID Inception-v3 network of pytorch-fid, ported to Flax NNX, with a torch-free weights loader.

The network is the one pytorch-fid builds for FID (``InceptionV3(use_fid_inception=True)``, itself a port of the
TensorFlow graph ``inception-2015-12-05`` used by the original TTUR FID code): torchvision's Inception-v3 layout
with the FID patches

- ``Mixed_5b/5c/5d`` (FIDInceptionA), ``Mixed_6b..6e`` (FIDInceptionC) and ``Mixed_7b`` (FIDInceptionE_1) average
  their pool branch with ``count_include_pad=False`` (TensorFlow's SAME average pool ignores the padding);
- ``Mixed_7c`` (FIDInceptionE_2) uses a 3x3/1 *max* pool in its pool branch;
- a 1008-way ``fc`` layer (the TF graph's classes). The Inception Score takes ``features @ fc.weight`` *without*
  the bias, as the original IS code does (Salimans et al. 2016: ``softmax/logits/MatMul``, before the bias add;
  torch-fidelity's ``logits_unbiased`` likewise), so these logits are the unbiased ones.

Every conv is ``BasicConv2d``: a conv without bias, BatchNorm (eps = 0.001, running statistics) and ReLU. The input
(``[N, H, W, C]`` in [0, 1], NHWC throughout) is resized to 299x299 exactly as ``F.interpolate(mode="bilinear",
align_corners=False)`` does (no antialiasing, also when shrinking), then scaled to [-1, 1]. Features are the 2048-d
global average pool after ``Mixed_7c`` (pytorch-fid's output block 3).

Weights come from the user's file, never from the network: the official ``pt_inception-2015-12-05-6726825d.pth``
(a torch ``state_dict``), or an ``.npz`` with the same keys. The ``.pth`` is read with ``zipfile`` + a restricted
``pickle`` unpickler (both the zip format of torch >= 1.6 and the older legacy format), so this module does not need
torch. Convs and matmuls run at ``Precision.HIGHEST`` so that accelerators do not drop to TF32/bf16.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import struct
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from aigc_jax.core.errors import UserError

ENV_VAR = "AIGC_JAX_INCEPTION_WEIGHTS"
WEIGHTS_VERSION = "pt_inception-2015-12-05"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_FILE
# sha256 of the official file (95,628,359 bytes); torch hub names files by the first 8 hex digits of it.
OFFICIAL_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008
BN_EPS = 1e-3

_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2d(nnx.Module):
    """A bias-free NHWC convolution with explicit (torch-style, symmetric) padding; kernel HWIO."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        kh, kw = _pair(kernel)
        ph, pw = _pair(padding)
        self.kernel = nnx.Param(np.zeros((kh, kw, cin, cout), np.float32))
        self.stride = _pair(stride)
        self.padding = ((ph, ph), (pw, pw))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.lax.conv_general_dilated(x, self.kernel[...], self.stride, self.padding,
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST)


class BatchNorm(nnx.Module):
    """Inference BatchNorm with running statistics, computed as torch does: x * a + (beta - mean * a)."""

    def __init__(self, channels: int, eps: float = BN_EPS):
        self.scale = nnx.Param(np.ones(channels, np.float32))
        self.bias = nnx.Param(np.zeros(channels, np.float32))
        self.mean = nnx.BatchStat(np.zeros(channels, np.float32))
        self.var = nnx.BatchStat(np.ones(channels, np.float32))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.scale[...] * jax.lax.rsqrt(self.var[...] + self.eps)
        b = self.bias[...] - self.mean[...] * a
        return x * a.reshape(1, 1, 1, -1) + b.reshape(1, 1, 1, -1)


class Linear(nnx.Module):
    """The ``fc`` layer's weights. Its bias is loaded (it is in the state_dict) but unused: see the module docstring."""

    def __init__(self, din: int, dout: int):
        self.kernel = nnx.Param(np.zeros((din, dout), np.float32))
        self.bias = nnx.Param(np.zeros(dout, np.float32))


class BasicConv2d(nnx.Module):
    """Conv (no bias) -> BatchNorm(eps=0.001, running stats) -> ReLU, as torchvision's ``BasicConv2d`` in eval."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        self.conv = Conv2d(cin, cout, kernel, stride, padding)
        self.bn = BatchNorm(cout)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


def _max_pool(x: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
    """``F.max_pool2d`` (floor mode; padding counts as -inf) on NHWC."""
    return jax.lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), jax.lax.max, (1, window, window, 1),
                                 (1, stride, stride, 1), ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def _avg_pool_3x3_exclude_pad(x: jax.Array) -> jax.Array:
    """``F.avg_pool2d(kernel_size=3, stride=1, padding=1, count_include_pad=False)`` on NHWC."""
    pads = ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x, jnp.array(0, x.dtype), jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
    h, w = x.shape[1], x.shape[2]
    rows = np.full(h, 3.0)
    rows[0] -= 1
    rows[-1] -= 1
    cols = np.full(w, 3.0)
    cols[0] -= 1
    cols[-1] -= 1
    count = np.maximum(np.outer(rows, cols), 1.0).reshape(1, h, w, 1).astype(np.float32)
    return total / jnp.asarray(count, x.dtype)


class InceptionA(nnx.Module):
    """FIDInceptionA (Mixed_5b/c/d)."""

    def __init__(self, cin: int, pool_features: int):
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nnx.Module):
    """torchvision InceptionB (Mixed_6a), unpatched."""

    def __init__(self, cin: int):
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def __call__(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return jnp.concatenate([b3, bd, _max_pool(x, 3, 2)], axis=-1)


class InceptionC(nnx.Module):
    """FIDInceptionC (Mixed_6b..6e): factorised 1x7 / 7x1 convs."""

    def __init__(self, cin: int, c7: int):
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        bd = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(self.branch7x7dbl_2(bd))))
        bp = self.branch_pool(_avg_pool_3x3_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nnx.Module):
    """torchvision InceptionD (Mixed_7a), unpatched."""

    def __init__(self, cin: int):
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def __call__(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([b3, b7, _max_pool(x, 3, 2)], axis=-1)


class InceptionE(nnx.Module):
    """FIDInceptionE_1 (``pool="avg"``, Mixed_7b) or FIDInceptionE_2 (``pool="max"``, Mixed_7c)."""

    def __init__(self, cin: int, pool: str):
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def __call__(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = jnp.concatenate([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], axis=-1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = jnp.concatenate([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], axis=-1)
        pooled = _avg_pool_3x3_exclude_pad(x) if self.pool == "avg" else _max_pool(x, 3, 1, pad=1)
        return jnp.concatenate([b1, b3, bd, self.branch_pool(pooled)], axis=-1)


class FIDInceptionV3(nnx.Module):
    """pytorch-fid's FID Inception-v3 (attribute names = the torch ``state_dict`` names).

    ``__call__`` takes the network input (``[N, 299, 299, 3]`` NHWC, already resized and scaled to [-1, 1], see
    :func:`preprocess`) and returns ``{"features": [N, 2048], "logits": [N, 1008]}`` (logits without the fc bias).
    """

    def __init__(self):
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, "avg")
        self.Mixed_7c = InceptionE(2048, "max")
        self.fc = Linear(FEATURE_DIM, NUM_LOGITS)

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = _max_pool(x, 3, 2)  # end of pytorch-fid block 0
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = _max_pool(x, 3, 2)  # end of block 1
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e):
            x = block(x)  # end of block 2 after Mixed_6e
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        features = jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)): block 3
        # The Inception Score's logits: the fc matmul before its bias (see the module docstring).
        logits = jnp.matmul(features, self.fc.kernel[...], precision=_HIGHEST)
        return {"features": features, "logits": logits}


# ----------------------------------------------------------------------------------------------------------------
# Input preprocessing: F.interpolate(size=299, mode="bilinear", align_corners=False), then 2x - 1
# ----------------------------------------------------------------------------------------------------------------


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``[out_size, in_size]`` float32 weights of torch's bilinear resize along one axis (align_corners=False).

    Follows ATen's CPU kernel in float32: scale = in/out, src = scale * (dst + 0.5) - 0.5 clamped at 0,
    i0 = min(floor(src), in - 1), i1 = min(i0 + 1, in - 1), weights (1 - l, l) with l = clip(src - i0, 0, 1).
    The compiled kernel evaluates ``scale * (dst + 0.5) - 0.5`` as one fused multiply-add (a single float32
    rounding); so do we (the float32 product is exact in float64), which brings the resized pixels from ~3e-6 to
    ~1e-7 of torch's at 512 -> 299. No antialiasing, also when shrinking (``F.interpolate``'s ``antialias=False``).
    """
    scale = np.float32(in_size) / np.float32(out_size)
    half = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)).astype(np.float64)
    src = (np.float64(scale) * half - 0.5).astype(np.float32)  # fmaf(scale, dst + 0.5f, -0.5f)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    lam1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    lam0 = np.float32(1) - lam1
    i1 = np.minimum(i0 + 1, in_size - 1)
    m = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(m, (rows, i0), lam0)
    np.add.at(m, (rows, i1), lam1)
    return m


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """NHWC bilinear resize to ``size x size``, equal to torch's ``F.interpolate(..., align_corners=False)``."""
    _, h, w, _ = images.shape
    if (h, w) == (size, size):
        return images  # torch's kernel is the identity at scale 1 (all weights 1 and 0)
    rh = jnp.asarray(bilinear_matrix(h, size), images.dtype)
    rw = jnp.asarray(bilinear_matrix(w, size), images.dtype)
    x = jnp.einsum("ih,nhwc->niwc", rh, images, precision=_HIGHEST)
    return jnp.einsum("jw,niwc->nijc", rw, x, precision=_HIGHEST)


def preprocess(images: jax.Array) -> jax.Array:
    """``[N, H, W, 1 or 3]`` in [0, 1] -> the network input ``[N, 299, 299, 3]`` in [-1, 1] (grayscale repeated)."""
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.broadcast_to(x, x.shape[:3] + (3,))
    return 2 * resize_bilinear(x) - 1


# ----------------------------------------------------------------------------------------------------------------
# torch state_dict -> NNX state
# ----------------------------------------------------------------------------------------------------------------


@functools.cache
def abstract_model() -> tuple[nnx.GraphDef, nnx.State]:
    """The graph and a placeholder state (shapes only matter) of :class:`FIDInceptionV3`."""
    return nnx.split(FIDInceptionV3())  # placeholder zeros (calloc'd, never touched)


def _torch_key(path: tuple, ndim: int) -> tuple[str, Any]:
    """The torch ``state_dict`` key of an NNX variable path, and the transform from torch layout to ours."""
    *mods, leaf = (str(p) for p in path)
    prefix = ".".join(mods)
    if leaf == "kernel" and ndim == 4:  # conv: OIHW -> HWIO
        return f"{prefix}.weight", lambda a: a.transpose(2, 3, 1, 0)
    if leaf == "kernel" and ndim == 2:  # linear: [out, in] -> [in, out]
        return f"{prefix}.weight", lambda a: a.T
    name = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
    return f"{prefix}.{name}", lambda a: a


def state_from_torch(state_dict: Mapping[str, np.ndarray]) -> nnx.State:
    """Convert pytorch-fid's FID Inception ``state_dict`` (name -> numpy array) into the :class:`FIDInceptionV3` state.

    Keys are those of ``fid_inception_v3().state_dict()`` (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn
    .running_mean``, ..., ``fc.weight``); ``num_batches_tracked`` entries are ignored. A missing key, an unknown key
    or a shape mismatch is a :class:`UserError`. Values are converted to float32.
    """
    _, abstract = abstract_model()
    sd = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
    flat = nnx.to_flat_state(abstract)
    used, missing, values = set(), [], []
    for path, var in flat:
        key, transform = _torch_key(path, len(var.shape))
        if key not in sd:
            missing.append(key)
            values.append((path, var))
            continue
        used.add(key)
        arr = transform(np.asarray(sd[key], np.float32))
        if arr.shape != tuple(var.shape):
            raise UserError(f"Inception weights: {key} has shape {np.asarray(sd[key]).shape}, expected the torch "
                            f"layout of {tuple(var.shape)} (is this the FID Inception {WEIGHTS_FILE}?)")
        values.append((path, var.replace(jnp.asarray(np.ascontiguousarray(arr)))))
    unknown = sorted(set(sd) - used)
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unknown:
            parts.append(f"{len(unknown)} unexpected (e.g. {', '.join(unknown[:3])})")
        raise UserError(f"Inception weights do not match the FID Inception-v3: {'; '.join(parts)} keys "
                        f"(expected the state_dict of pytorch-fid's {WEIGHTS_FILE})")
    return nnx.from_flat_state(values)


def model_from_torch(state_dict: Mapping[str, np.ndarray]) -> FIDInceptionV3:
    """A concrete :class:`FIDInceptionV3` with the weights of a torch ``state_dict`` (see :func:`state_from_torch`)."""
    graphdef, _ = abstract_model()
    return nnx.merge(graphdef, state_from_torch(state_dict))


# ----------------------------------------------------------------------------------------------------------------
# Reading torch checkpoints without torch
# ----------------------------------------------------------------------------------------------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        if name == "BFloat16Storage":
            import ml_dtypes

            self.dtype = np.dtype(ml_dtypes.bfloat16)
        elif name in _STORAGE_DTYPES:
            self.dtype = np.dtype(_STORAGE_DTYPES[name])
        else:
            raise UserError(f"torch checkpoint: unsupported storage type torch.{name}")


class _StorageRef:
    """A storage named by a persistent id; its bytes are looked up once the whole archive is known."""

    def __init__(self, key: str, dtype: np.dtype, numel: int, view: tuple | None = None):
        self.key, self.dtype, self.numel, self.view = key, dtype, numel, view


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size, stride):
        if not isinstance(storage, _StorageRef):
            raise UserError("torch checkpoint: a tensor without a storage")
        self.storage, self.offset, self.size, self.stride = storage, int(offset), tuple(size), tuple(stride)

    def materialize(self, storages: Mapping[str, np.ndarray]) -> np.ndarray:
        ref = self.storage
        if ref.key not in storages:
            raise UserError(f"torch checkpoint: storage {ref.key!r} is missing from the file")
        flat = storages[ref.key].view(ref.dtype) if storages[ref.key].dtype != ref.dtype else storages[ref.key]
        if ref.view is not None:  # legacy storage views: (view_key, offset, size) in elements
            _, v_off, v_size = ref.view
            flat = flat[v_off:v_off + v_size]
        if any(s == 0 for s in self.size):
            return np.zeros(self.size, ref.dtype)
        extent = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1
        if self.offset < 0 or min(self.stride, default=0) < 0 or extent > flat.size:
            raise UserError("torch checkpoint: a tensor reaches outside its storage (corrupt file)")
        base = flat[self.offset:]
        item = flat.itemsize
        out = np.lib.stride_tricks.as_strided(base, self.size, tuple(s * item for s in self.stride))
        return np.array(out, copy=True)


def _rebuild_tensor(storage, storage_offset, size, stride, *_):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a tensor ``state_dict`` only: tensors become :class:`_TensorRef`, any other class is refused."""

    _ALLOWED = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise UserError(f"torch checkpoint: refusing to unpickle {module}.{name} (only tensor state_dicts are read)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UserError(f"torch checkpoint: unsupported persistent id {str(pid)[:80]}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UserError("torch checkpoint: unsupported storage (untyped storages are not read)")
        view = pid[5] if len(pid) > 5 else None
        return _StorageRef(str(key), storage_type.dtype, int(numel), view)


def _collect(obj, out: list):
    if isinstance(obj, _TensorRef):
        out.append(obj)
    elif isinstance(obj, Mapping):
        for v in obj.values():
            _collect(v, out)
    elif isinstance(obj, list | tuple):
        for v in obj:
            _collect(v, out)


def _materialize(obj, storages):
    if isinstance(obj, _TensorRef):
        return obj.materialize(storages)
    if isinstance(obj, Mapping):
        return {k: _materialize(v, storages) for k, v in obj.items()}
    return obj


def _load_torch_zip(zf: zipfile.ZipFile) -> Any:
    names = zf.namelist()
    pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise UserError("not a torch checkpoint (no single data.pkl in the zip archive)")
    prefix = pkl[0][: -len("data.pkl")]
    big_endian = False
    if prefix + "byteorder" in names:
        big_endian = zf.read(prefix + "byteorder").decode().strip() == "big"
    obj = _TorchUnpickler(io.BytesIO(zf.read(pkl[0])), encoding="utf-8").load()
    refs: list[_TensorRef] = []
    _collect(obj, refs)
    storages = {}
    for ref in refs:
        s = ref.storage
        if s.key in storages:
            continue
        entry = f"{prefix}data/{s.key}"
        if entry not in names:
            raise UserError(f"torch checkpoint: storage entry {entry} is missing from the archive")
        dtype = s.dtype.newbyteorder(">") if big_endian and s.dtype.itemsize > 1 else s.dtype
        arr = np.frombuffer(zf.read(entry), dtype)
        storages[s.key] = arr.astype(s.dtype) if big_endian else arr
    return _materialize(obj, storages)


def _load_torch_legacy(f) -> Any:
    """torch's pre-1.6 format: magic, protocol, sys_info, the pickled object, the storage keys, then the storages."""
    plain = _TorchUnpickler(f)  # the header pickles are plain ints/dicts
    try:
        magic = plain.load()
    except Exception as e:
        raise UserError(f"not a torch checkpoint or .npz ({type(e).__name__})") from None
    if magic != _LEGACY_MAGIC:
        raise UserError("not a torch checkpoint or .npz (unknown file format)")
    if _TorchUnpickler(f).load() != _LEGACY_PROTOCOL:
        raise UserError("torch checkpoint: unsupported legacy protocol version")
    sys_info = _TorchUnpickler(f).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise UserError("torch checkpoint: big-endian legacy files are not supported")
    obj = _TorchUnpickler(f, encoding="utf-8").load()
    keys = _TorchUnpickler(f).load()
    refs: list[_TensorRef] = []
    _collect(obj, refs)
    dtypes = {r.storage.key: r.storage.dtype for r in refs}
    storages = {}
    for key in keys:
        key = str(key)
        header = f.read(8)
        if len(header) != 8:
            raise UserError("torch checkpoint: truncated file")
        (numel,) = struct.unpack("<q", header)
        dtype = np.dtype(dtypes.get(key, np.uint8))
        data = f.read(numel * dtype.itemsize)
        if len(data) != numel * dtype.itemsize:
            raise UserError("torch checkpoint: truncated file")
        storages[key] = np.frombuffer(data, dtype)
    return _materialize(obj, storages)


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a torch ``state_dict`` file (zip or legacy ``torch.save`` format) or an ``.npz`` as name -> numpy.

    Never imports torch; only tensors, ``OrderedDict`` and storages are unpickled (anything else is refused).
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"Inception weights file {str(path)!r} does not exist (expected {WEIGHTS_FILE})")
    try:
        if zipfile.is_zipfile(p):
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
                if names and all(n.endswith(".npy") for n in names):
                    with np.load(p, allow_pickle=False) as npz:
                        obj = {k: np.asarray(npz[k]) for k in npz.files}
                else:
                    obj = _load_torch_zip(zf)
        else:
            with open(p, "rb") as f:
                obj = _load_torch_legacy(f)
    except UserError as e:
        raise UserError(f"cannot read Inception weights {str(path)!r}: {e}") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError, TypeError) as e:
        raise UserError(f"cannot read Inception weights {str(path)!r}: {type(e).__name__}: {e}") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise UserError(f"Inception weights {str(path)!r} is not a state_dict of tensors")
    return {str(k): v for k, v in obj.items()}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The feature extractor
# ----------------------------------------------------------------------------------------------------------------


class InceptionExtractor:
    """``inception-v3`` features (2048-d pool) and IS logits (1008, no bias) of pytorch-fid's FID Inception, in JAX.

    ``weights``: the path of ``pt_inception-2015-12-05-6726825d.pth`` (or an ``.npz`` with the same keys); when
    ``None`` the environment variable ``AIGC_JAX_INCEPTION_WEIGHTS`` is used. Nothing is ever downloaded. A file whose
    sha256 is not the official one still loads (with a warning), but its id says ``custom-weights-<sha[:12]>`` so that
    its numbers are never mixed with official FIDs.
    """

    image_shape = (INPUT_SIZE, INPUT_SIZE, 3)

    def __init__(self, weights: str | os.PathLike | None = None):
        path = weights if weights not in (None, "") else os.environ.get(ENV_VAR) or None
        if path is None:
            raise UserError(f"inception-v3 needs the FID Inception weights {WEIGHTS_FILE}: pass --inception-weights "
                            f"PATH or AIGC_JAX_INCEPTION_WEIGHTS=PATH (nothing is downloaded; the file is published "
                            f"at {WEIGHTS_URL})")
        self.path = str(path)
        self._state = state_from_torch(load_state_dict(self.path))
        self.sha256 = file_sha256(self.path)
        self.official = self.sha256 == OFFICIAL_SHA256
        if not self.official:
            warnings.warn(f"Inception weights {self.path!r} are not the official {WEIGHTS_FILE} (sha256 "
                          f"{self.sha256[:12]}...); their FID/IS are not comparable with published numbers",
                          stacklevel=2)
        version = WEIGHTS_VERSION if self.official else f"custom-weights-{self.sha256[:12]}"
        self.id = (f"inception-v3/{version}/sha256:{self.sha256[:12]}/resize:bilinear-{INPUT_SIZE}-align_corners=False"
                   "/gray:repeat-to-rgb/is:logits-unbiased")
        graphdef = abstract_model()[0]
        self._preprocess = jax.jit(preprocess)
        self._forward = jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))

    def __call__(self, images, batch_size: int = 500) -> dict[str, np.ndarray]:
        """``{"features": [N, 2048], "logits": [N, 1008]}`` (float32) for ``[N, H, W, 1 or 3]`` images in [0, 1].

        One compile of the network per batch size (the last batch is padded); grayscale images are repeated to RGB.
        """
        x = images if isinstance(images, jax.Array) else np.asarray(images)
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or not jnp.issubdtype(x.dtype, jnp.floating):
            raise UserError(f"inception-v3 takes float images [N, H, W, 1 or 3] in [0, 1], got {x.dtype} "
                            f"{tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return {"features": np.zeros((0, FEATURE_DIM), np.float32), "logits": np.zeros((0, NUM_LOGITS), np.float32)}
        b = max(1, min(int(batch_size), n))
        outs = []
        for start in range(0, n, b):
            chunk = jnp.asarray(x[start:start + b], jnp.float32)
            m = chunk.shape[0]
            if m < b:  # pad the last batch: the network is compiled once per batch size
                chunk = jnp.pad(chunk, ((0, b - m), (0, 0), (0, 0), (0, 0)))
            out = self._forward(self._state, self._preprocess(chunk))
            outs.append((m, out))
        return {k: np.concatenate([np.asarray(o[k])[:m] for m, o in outs], axis=0) for k in ("features", "logits")}
