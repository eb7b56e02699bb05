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


def save_text(text: str, path: str | Path) -> Path:
    """Write a text file atomically (a temp file renamed into place), creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def save_grid(images: np.ndarray, path: str | Path, ncols: int | None = None, scale: int = 2) -> Path:
    """Write images as one PNG grid (atomically: a temp file renamed into place)."""
    path = Path(path)
    grid = image_grid(images, ncols)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


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


class RunWriter:
    """Appends one JSON object per event to metrics.jsonl and mirrors scalars to TensorBoard.

    ``resume_step``: a run resumed from that checkpoint first drops the records of later steps (written before a
    crash, and about to be written again), from metrics.jsonl and from TensorBoard's view (``purge_step``).
    """

    def __init__(self, workdir: str | Path, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.workdir = Path(workdir)
        self._t0 = time.time()
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            log = self.workdir / "metrics.jsonl"
            if resume_step and log.is_file():
                kept = [line for line in log.read_text().splitlines(keepends=True)
                        if _step_of(line) is not None and _step_of(line) <= resume_step]
                tmp = log.with_name(log.name + ".tmp")
                tmp.write_text("".join(kept))
                os.replace(tmp, log)
            self._tb = SummaryWriter(logdir=str(self.workdir), flush_secs=30,
                                     purge_step=resume_step + 1 if resume_step else None)

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
