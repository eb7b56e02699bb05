"""Reading a user's images (PNG/JPEG files or an ``.npz`` array) for image-to-image models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aigc_jax.core.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_images(path: str) -> np.ndarray:
    """Images float32 ``[N, h, w, c]`` in [0, 1] (c = 1 or 3) from a PNG/JPEG file (N = 1; grayscale stays one
    channel, anything else becomes RGB) or an ``.npz`` holding ``x``: ``[h, w]``, ``[N, h, w]`` or
    ``[N, h, w, c]``, uint8 or float in [0, 1]."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--input {path}: no such file")
    suffix = p.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as img:
                # 16-bit grayscale PNGs open as "I;16*" or "I" (0..65535): convert("L") would clip them at 255.
                sixteen = img.mode == "I" or img.mode.startswith("I;16")
                if not sixteen:
                    img = img.convert("L" if img.mode in ("1", "L", "LA") else "RGB")
                x = np.asarray(img).astype(np.float64)
        except (OSError, UnidentifiedImageError) as e:
            raise UserError(f"--input {path}: cannot read the image ({e})") from None
        top = 65535.0 if sixteen else 255.0
        if x.min() < 0 or x.max() > top:
            raise UserError(f"--input {path}: pixel values outside 0..{top:.0f}")
        x = x[None, ..., None] if x.ndim == 2 else x[None]
        return (x / top).astype(np.float32)
    if suffix == ".npz":
        try:
            with np.load(p) as z:
                if "x" not in z:
                    raise UserError(f"--input {path}: no array 'x' (found {sorted(z)})")
                x = np.asarray(z["x"])
        except (OSError, ValueError) as e:
            raise UserError(f"--input {path}: cannot read it as .npz ({e})") from None
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3) or x.shape[0] < 1:
            raise UserError(f"--input {path}: x must be [h, w], [N, h, w] or [N, h, w, 1 or 3], got {x.shape}")
        if x.dtype == np.uint8:
            return x.astype(np.float32) / 255.0
        if np.issubdtype(x.dtype, np.floating):
            if not np.all(np.isfinite(x)) or x.min() < 0.0 or x.max() > 1.0:
                raise UserError(f"--input {path}: float images must lie in [0, 1]")
            return x.astype(np.float32)
        raise UserError(f"--input {path}: x must be uint8 or float in [0, 1], got {x.dtype}")
    raise UserError(f"--input {path}: expected a .png, .jpg/.jpeg or .npz file")
