"""Run-directory writers: metrics.jsonl, TensorBoard events and PNG sample grids."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``[N, H, W, C]`` images in [0, 1] into one uint8 ``[rows*(H+pad)+pad, cols*(W+pad)+pad, C]`` grid."""
    images = np.asarray(images, np.float32)
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
    for i in range(n):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = images[i]
    return (np.clip(grid, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def check_writable(path: str | Path) -> Path:
    """``path`` if a file can be written there: not a folder, under no file, in a writable folder (the nearest
    one that exists); else a one-line UserError. For checking before long work, not instead of handling OSError."""
    from aigc_jax.core.errors import UserError

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: {folder} is a file")
    if not os.access(folder, os.W_OK):
        raise UserError(f"cannot write {path}: {folder} is not writable")
    return path


def atomic_write(path: str | Path, write) -> Path:
    """``write(tmp_path)`` then rename the temp file onto ``path``: a reader never sees a partial file, and a
    failed write (a full disk, an unwritable folder) leaves nothing behind. Refuses a ``path`` that is a folder."""
    path = check_writable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically, creating its directory."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def save_grid(images: np.ndarray, path: str | Path, ncols: int | None = None, scale: int = 2) -> Path:
    """Write images as one PNG grid (atomically: a temp file renamed into place)."""
    path = Path(path)
    grid = image_grid(images, ncols)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))


def save_panels(panels: np.ndarray, path: str | Path, scale: int = 2) -> Path:
    """Write ``[N, K, H, W, C]`` panels in [0, 1] (K images per example side by side, e.g. input | output | target)
    as one PNG grid with about as many rows as columns."""
    panels = np.asarray(panels)
    n, k = panels.shape[:2]
    per_row = max(1, round(math.sqrt(n / k)))
    return save_grid(panels.reshape(n * k, *panels.shape[2:]), path, ncols=per_row * k, scale=scale)


def _step_of(line: str) -> int | None:
    """The step of a metrics.jsonl record (None for a line cut short by a crash)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported without torch: tensorboardX imports torch whenever it is
    installed, only to accept torch tensors, and that import takes seconds (2.5 s of a 2-core CPU run's start-up);
    the writer here is only given Python floats. Where torch is imported already, nothing is hidden."""
    import sys

    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    sys.modules["torch"] = None  # makes ``import torch`` raise ImportError, which tensorboardX handles
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


class RunWriter:
    """Appends one JSON object per event to metrics.jsonl and mirrors scalars to TensorBoard.

    ``resume_step``: a run (re)started from that checkpoint (0: from scratch) first drops the records of later
    steps (written before a crash or a kill, and about to be written again), from metrics.jsonl and from
    TensorBoard's view (``purge_step``), so that every step's record is there once.
    """

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.workdir = Path(workdir)
        self._t0 = time.time()
        self._tb = None
        if enabled:
            SummaryWriter = _summary_writer_class()
            log = self.workdir / "metrics.jsonl"
            if log.is_file():
                lines = log.read_text().splitlines(keepends=True)
                kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= resume_step
                        and line.endswith("\n")]
                if kept != lines:
                    save_text("".join(kept), log)
            self._tb = SummaryWriter(logdir=str(self.workdir), flush_secs=30, purge_step=resume_step + 1)

    def write(self, kind: str, step: int, values: dict) -> None:
        if not self.enabled:
            return
        rec = {"kind": kind, "step": int(step), "wall_time": round(time.time() - self._t0, 3)}
        rec.update({k: float(v) for k, v in values.items()})
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        for k, v in values.items():
            self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
