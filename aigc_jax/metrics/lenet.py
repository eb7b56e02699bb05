"""``lenet-mnist``: a small MNIST classifier used as the feature extractor for FID/KID/IS/precision-recall on MNIST.

Network (images float ``[N, 28, 28, 1]`` in [0, 1], NHWC, "VALID" convolutions):
conv 5x5 1->32 + ReLU + 2x2 max-pool (-> 12x12x32), conv 5x5 32->64 + ReLU + 2x2 max-pool (-> 4x4x64),
dense 1024->128 + ReLU (the ``features``), dense 128->10 (the ``logits``). 184,586 parameters.

The weights ship in the package as ``weights/lenet_mnist_v1.npz`` (float32, ~0.7 MB); `SHA256` pins that file and
loading refuses any other bytes, so every metric computed with the id ``lenet-mnist/v1/sha256:<12 hex>/resize:none``
used the same network. Retrain (and print the new hash to paste below) with

    python -m aigc_jax.metrics.lenet --retrain [--out PATH] [--epochs 6] [--seed 0]

v1 was trained with exactly that default command (Adam 1e-3 with cosine decay, batch 128, 6 epochs, random shifts
of up to 2 pixels, on the 60k embedded MNIST training images): test accuracy 99.39% on the 10k MNIST test images,
7 min 45 s wall on 2 CPU cores shared with other jobs (about 33 s per epoch, ~3.5 min in all, when the cores are
free; jax 0.10.2). A fixed seed gives the same weights and hash on the same machine and jaxlib (checked); XLA:CPU
float reductions may differ across CPUs and versions, so a retrain elsewhere may give another hash.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.core.errors import UserError

VERSION = "v1"
SHA256 = "269203280906564ce91dac1462423e16c7b236dd195fe4e4e5efeb742758f14e"
WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / f"lenet_mnist_{VERSION}.npz"
IMAGE_SHAPE = (28, 28, 1)
FEATURE_DIM = 128
NUM_CLASSES = 10

PARAM_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.w": (5, 5, 1, 32),
    "conv1.b": (32,),
    "conv2.w": (5, 5, 32, 64),
    "conv2.b": (64,),
    "fc1.w": (4 * 4 * 64, FEATURE_DIM),
    "fc1.b": (FEATURE_DIM,),
    "fc2.w": (FEATURE_DIM, NUM_CLASSES),
    "fc2.b": (NUM_CLASSES,),
}


# --------------------------------------------------------------------------------------------------- network


# Full float32 everywhere: accelerators would otherwise run the convs and matmuls in TF32/bf16, and a metric's
# features must not depend on the device.
_HIGHEST = jax.lax.Precision.HIGHEST


def _conv_relu_pool(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     precision=_HIGHEST)
    y = jax.nn.relu(y + b.reshape(1, 1, 1, -1))
    n, h, w_, c = y.shape
    return y.reshape(n, h // 2, 2, w_ // 2, 2, c).max(axis=(2, 4))


def apply(params: dict[str, jax.Array], images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(features [N, 128], logits [N, 10])`` for float images ``[N, 28, 28, 1]`` in [0, 1]."""
    x = _conv_relu_pool(images, params["conv1.w"], params["conv1.b"])
    x = _conv_relu_pool(x, params["conv2.w"], params["conv2.b"])
    x = x.reshape(x.shape[0], -1)
    features = jax.nn.relu(jnp.matmul(x, params["fc1.w"], precision=_HIGHEST) + params["fc1.b"][None, :])
    logits = jnp.matmul(features, params["fc2.w"], precision=_HIGHEST) + params["fc2.b"][None, :]
    return features, logits


def init_params(key: jax.Array) -> dict[str, jax.Array]:
    """He-normal weights, zero biases."""
    params = {}
    keys = jax.random.split(key, len(PARAM_SHAPES))
    for k, (name, shape) in zip(keys, PARAM_SHAPES.items(), strict=True):
        if name.endswith(".b"):
            params[name] = jnp.zeros(shape, jnp.float32)
        else:
            fan_in = int(np.prod(shape[:-1]))
            params[name] = jax.random.normal(k, shape, jnp.float32) * np.float32(np.sqrt(2.0 / fan_in))
    return params


# --------------------------------------------------------------------------------------------------- weights file


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_params(path: str | os.PathLike | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The parameters in ``path`` (default: the shipped file) and the file's sha256, after checking it is v1."""
    p = Path(path).expanduser() if path else WEIGHTS_PATH
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read lenet-mnist weights {p}: {e.strerror or e}") from None
    digest = _sha256_bytes(data)
    if digest != SHA256:
        raise UserError(
            f"lenet-mnist weights {p} have sha256 {digest[:12]}..., expected {SHA256[:12]}... for {VERSION} "
            "(the file is modified or is not the shipped weights; reinstall aigc-jax)"
        )
    with np.load(io.BytesIO(data)) as z:
        params = {name: np.asarray(z[name], np.float32) for name in PARAM_SHAPES if name in z}
    for name, shape in PARAM_SHAPES.items():
        if name not in params or params[name].shape != shape:
            raise UserError(f"lenet-mnist weights {p}: missing or misshapen array {name!r} (expected {shape})")
    return params, digest


def _npz_bytes(params: dict[str, np.ndarray]) -> bytes:
    """A deterministic .npz (fixed zip timestamps, fixed member order), so equal weights give an equal hash."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in PARAM_SHAPES:
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(params[name], np.float32), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def save_params(params: dict[str, np.ndarray], path: str | os.PathLike) -> str:
    """Write ``params`` to ``path`` atomically (temp file + rename); returns the file's sha256."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = _npz_bytes({k: np.asarray(v) for k, v in params.items()})
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return _sha256_bytes(data)


# --------------------------------------------------------------------------------------------------- extractor


class LeNetExtractor:
    """The ``lenet-mnist`` feature extractor: ``{"features": [N, 128], "logits": [N, 10]}`` for MNIST-shaped images."""

    image_shape = IMAGE_SHAPE

    def __init__(self, weights: str | None = None):
        params, digest = load_params(weights)
        self.id = f"lenet-mnist/{VERSION}/sha256:{digest[:12]}/resize:none"
        self._params = jax.device_put(params)
        self._apply = jax.jit(apply)

    def __call__(self, images, batch_size: int = 500) -> dict[str, np.ndarray]:
        x = np.asarray(images)
        if x.ndim != 4 or tuple(x.shape[1:]) != IMAGE_SHAPE:
            raise UserError(
                f"lenet-mnist accepts images of shape [N, 28, 28, 1] (float in [0, 1]), got shape {tuple(x.shape)}"
            )
        if int(batch_size) < 1:
            raise UserError(f"batch_size must be >= 1, got {batch_size}")
        x = x.astype(np.float32, copy=False)
        n = len(x)
        bs = int(batch_size)
        feats = np.empty((n, FEATURE_DIM), np.float32)
        logits = np.empty((n, NUM_CLASSES), np.float32)
        for start in range(0, n, bs):
            chunk = x[start : start + bs]
            m = len(chunk)
            if m < bs:  # pad the last batch to the compiled shape instead of compiling another
                chunk = np.concatenate([chunk, np.zeros((bs - m, *IMAGE_SHAPE), np.float32)])
            f, lg = self._apply(self._params, chunk)
            feats[start : start + m] = np.asarray(f)[:m]
            logits[start : start + m] = np.asarray(lg)[:m]
        return {"features": feats, "logits": logits}


# --------------------------------------------------------------------------------------------------- retraining


def _random_shift(images: jax.Array, key: jax.Array, max_shift: int) -> jax.Array:
    """Each image shifted by an independent integer offset in [-max_shift, max_shift]^2 (zero fill)."""
    if max_shift == 0:
        return images
    n = images.shape[0]
    padded = jnp.pad(images, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)))
    offsets = jax.random.randint(key, (n, 2), 0, 2 * max_shift + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), IMAGE_SHAPE)

    return jax.vmap(crop)(padded, offsets)


def accuracy(params, images_u8: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    fwd = jax.jit(apply)
    correct = 0
    for s in range(0, len(images_u8), batch_size):
        x = images_u8[s : s + batch_size].astype(np.float32) / 255.0
        _, lg = fwd(params, x)
        correct += int((np.asarray(lg).argmax(-1) == labels[s : s + batch_size]).sum())
    return correct / len(images_u8)


def train(
    epochs: int = 6, seed: int = 0, batch_size: int = 128, lr: float = 1e-3, max_shift: int = 2, log=None
) -> dict[str, np.ndarray]:
    """Train on the embedded MNIST training split; returns the float32 numpy parameters."""
    import optax

    from aigc_jax.data.sources import load_mnist

    log = log or (lambda msg: print(msg, flush=True))
    train_set = load_mnist("train")
    images = jnp.asarray(train_set.images)  # uint8 [60000, 28, 28, 1], kept on device
    labels = jnp.asarray(train_set.labels)
    steps_per_epoch = len(train_set) // batch_size
    total = epochs * steps_per_epoch
    tx = optax.adam(optax.cosine_decay_schedule(lr, total, alpha=0.01))
    key = jax.random.key(seed)
    key, init_key = jax.random.split(key)
    params = init_params(init_key)
    opt_state = tx.init(params)

    def loss_fn(p, x, y):
        _, logits = apply(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, s, idx, k):
        x = images[idx].astype(jnp.float32) / 255.0
        x = _random_shift(x, k, max_shift)
        loss, g = jax.value_and_grad(loss_fn)(p, x, labels[idx])
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = rng.permutation(len(train_set)).astype(np.int32)
        losses = []
        for i in range(steps_per_epoch):
            key, sk = jax.random.split(key)
            params, opt_state, loss = step(params, opt_state, perm[i * batch_size : (i + 1) * batch_size], sk)
            losses.append(loss)
        mean_loss = float(jnp.mean(jnp.stack(losses)))
        log(f"epoch {epoch + 1}/{epochs}: train loss {mean_loss:.4f} ({time.perf_counter() - t0:.0f}s)")
    return {k: np.asarray(v, np.float32) for k, v in params.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigc_jax.metrics.lenet", description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train the network on the embedded MNIST")
    parser.add_argument("--out", default=str(WEIGHTS_PATH), help="where to write the .npz (default: the shipped file)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not args.retrain:
        parser.print_help()
        return 2
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    from aigc_jax.data.sources import load_mnist

    t0 = time.perf_counter()
    params = train(epochs=args.epochs, seed=args.seed)
    test = load_mnist("test")
    acc = accuracy(params, test.images, test.labels)
    digest = save_params(params, args.out)
    print(f"test accuracy: {acc * 100:.2f}% on {len(test)} MNIST test images")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes) in {time.perf_counter() - t0:.0f}s")
    print(f'sha256: {digest}\nput in aigc_jax/metrics/lenet.py: SHA256 = "{digest}"')
    return 0


if __name__ == "__main__":
    sys.exit(main())
