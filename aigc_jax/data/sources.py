"""Datasets by name: ``mnist`` (embedded or a folder of IDX files), ``cifar10-subset`` (embedded: the first 4,000
train and 1,000 test images of CIFAR-10, Krizhevsky 2009), ``tfds:NAME`` and a user's ``.npz``.

Every source gives a split as a random-access record source of ``{"image": uint8 [H, W, C], "label": int32}``.
In-memory arrays (MNIST, npz) are wrapped in `ArraySource`, whose ``__getitems__`` gathers a whole batch with one
fancy index; TFDS's ``data_source`` objects already support random access.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aigc_jax.core.errors import UserError
from aigc_jax.data import embedded

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class ArraySource:
    """A split held in memory: images uint8 [N, H, W, C], labels int32 [N]."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i]}

    def __getitems__(self, idx):
        idx = np.asarray(idx)
        return {"image": self.images[idx], "label": self.labels[idx]}

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims))
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise UserError(f"{path} is truncated or corrupt: header says {dims}, body has {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"MNIST file {stem}[.gz] not found in {folder} (a folder needs the four standard IDX files: "
        + ", ".join(s for pair in MNIST_FILES.values() for s in pair)
        + ")"
    )


def load_mnist(split: str, folder: str = "") -> ArraySource:
    """MNIST from the embedded, checksum-verified copy or from any folder of IDX files."""
    img_stem, lbl_stem = MNIST_FILES[split]
    if folder:
        root = Path(folder).expanduser()
        if not root.is_dir():
            raise UserError(f"data.path={folder!r} is not a folder (expected a folder of MNIST IDX files)")
        img_path, lbl_path = _find_idx(root, img_stem), _find_idx(root, lbl_stem)
    else:
        img_path = embedded.verified(f"mnist/{img_stem}.gz")
        lbl_path = embedded.verified(f"mnist/{lbl_stem}.gz")
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"MNIST files in {img_path.parent} have inconsistent shapes {images.shape}, {labels.shape}")
    return ArraySource(images[..., None].astype(np.uint8), labels.astype(np.int32))


CIFAR10_SUBSET = "cifar10_subset/cifar10_subset.npz"


def load_cifar10_subset(split: str, path: str = "") -> ArraySource:
    """The CIFAR-10 subset: uint8 ``[4000 | 1000, 32, 32, 3]`` with labels 0-9, from the embedded, checksum-verified
    copy or from a user's copy of the same ``.npz`` (``data.path``)."""
    file = Path(path).expanduser() if path else embedded.verified(CIFAR10_SUBSET)
    src = load_npz(str(file), split)
    if src.image_shape != (32, 32, 3):
        raise UserError(f"{file}: cifar10-subset images must be [N, 32, 32, 3], got {src.images.shape}")
    return src


def _as_uint8_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise UserError(f"{where}: images must be [N, H, W] or [N, H, W, C], got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise UserError(f"{where}: {int(np.size(x) - np.isfinite(x).sum())} pixel values are NaN or infinite")
        if x.size and (x.min() < 0 or x.max() > 1):
            raise UserError(f"{where}: float images must lie in [0, 1]")
        return np.round(x * 255).astype(np.uint8)
    raise UserError(f"{where}: images must be uint8 or float in [0, 1], got {x.dtype}")


def load_npz(path: str, split: str) -> ArraySource:
    """A user's ``.npz`` with ``x_train``/``x_test`` images (and optional ``y_train``/``y_test`` labels)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"dataset file {path!r} not found")
    try:
        z = np.load(p)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path!r} as .npz: {e}") from None
    xk, yk = f"x_{split}", f"y_{split}"
    if xk not in z:
        raise UserError(f"{path}: no array {xk!r} (an .npz dataset needs x_train and x_test; found {sorted(z)})")
    try:
        x, y = z[xk], (z[yk] if yk in z else None)
    except (OSError, ValueError) as e:  # e.g. an object array (pickles are never loaded)
        raise UserError(f"cannot read {path!r} as .npz arrays: {e}") from None
    images = _as_uint8_images(x, f"{path}:{xk}")
    if y is not None and not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        raise UserError(f"{path}:{yk}: labels must be integers, got {y.dtype}")
    labels = y.astype(np.int32).reshape(-1) if y is not None else np.zeros(len(images), np.int32)
    if len(labels) != len(images):
        raise UserError(f"{path}: {xk} has {len(images)} rows but {yk} has {len(labels)}")
    return ArraySource(images, labels)


class TFDSSource:
    """A TFDS split through ``tfds.data_source`` (array_record; no TensorFlow), as image/label records."""

    def __init__(self, name: str, split: str, data_dir: str = ""):
        try:
            import tensorflow_datasets as tfds
        except ImportError:  # pragma: no cover - a core dependency
            raise UserError("tfds datasets need tensorflow-datasets: pip install tensorflow-datasets") from None
        try:
            self._src = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
        except Exception as e:  # TFDS raises many types for a missing or unprepared dataset
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(
                f"tfds:{name} split {split!r} is not available offline ({msg}); prepare it first with "
                f"`tfds build {name}` or point data.path at its data_dir"
            ) from None
        first = self._src[0]
        self._image_key = "image" if "image" in first else next(
            (k for k, v in first.items() if getattr(v, "ndim", 0) >= 2), None
        )
        if self._image_key is None:
            raise UserError(f"tfds:{name} has no image feature (features: {sorted(first)})")
        self._label_key = "label" if "label" in first else None
        self.image_shape = tuple(_as_uint8_images(np.asarray(first[self._image_key])[None], name).shape[1:])

    def __len__(self) -> int:
        return len(self._src)

    def _convert(self, rec):
        img = np.asarray(rec[self._image_key])
        lbl = np.int32(rec[self._label_key]) if self._label_key else np.int32(0)
        return img, lbl

    def __getitems__(self, idx):
        recs = [self._src[int(i)] for i in idx]
        imgs, lbls = zip(*(self._convert(r) for r in recs), strict=True)
        return {"image": _as_uint8_images(np.stack(imgs), "tfds"), "label": np.asarray(lbls, np.int32)}

    def __getitem__(self, i):
        out = self.__getitems__([i])
        return {k: v[0] for k, v in out.items()}


def get_source(name: str, split: str, path: str = ""):
    """Resolve a dataset name to a split's record source."""
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}: expected train or test")
    if name == "mnist":
        return load_mnist(split, path)
    if name == "cifar10-subset":
        return load_cifar10_subset(split, path)
    if name.startswith("tfds:"):
        ds = name[len("tfds:") :]
        if not ds:
            raise UserError("data.name='tfds:' needs a dataset name, e.g. tfds:mnist")
        return TFDSSource(ds, split, path)
    if name.endswith(".npz"):
        return load_npz(name, split)
    raise UserError(
        f"unknown dataset {name!r}: expected mnist, cifar10-subset, tfds:NAME, a path to an .npz file, shakespeare, "
        "a path to a .txt file, or synthetic"
    )


def for_experiment(config, split: str, spec=None):
    """The record source of an experiment's dataset split: images, or token windows of the model's declared
    context (``spec``: the model's `ModelSpec`, built from ``config`` when not given)."""
    d = config.data
    if d.name == "shakespeare" or d.name.endswith(".txt") or d.name == "synthetic":
        from aigc_jax.data import text

        if spec is None:
            from aigc_jax.core.registry import build_model

            spec = build_model(config).spec
        if spec.output != "tokens":
            raise UserError(f"dataset {d.name!r} is text; model {config.model_name!r} does not read tokens")
        if d.name == "synthetic":
            return text.SyntheticTokens(spec.vocab_size, spec.context, seed=d.seed + (split == "test"))
        return text.text_source(d.name, split, spec.context, d.tokenizer, d.path, d.train_fraction)
    return get_source(d.name, split, d.path)
