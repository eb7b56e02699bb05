"""The embedded default data (the repository's `data/` folder, shipped inside the wheel) and its checksums."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from aigc_jax.core.errors import UserError


def data_root() -> Path:
    """Where the embedded data lives: $AIGC_JAX_DATA, the copy inside an installed wheel, or the repo's data/."""
    env = os.environ.get("AIGC_JAX_DATA")
    if env:
        return Path(env)
    pkg = Path(__file__).resolve().parents[1]
    installed = pkg / "_embedded_data"
    if installed.is_dir():
        return installed
    return pkg.parent / "data"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.cache
def _sums(root: Path) -> dict[str, str]:
    sums_file = root / "SHA256SUMS"
    if not sums_file.is_file():
        raise UserError(f"embedded data is incomplete: {sums_file} is missing (re-clone or reinstall aigc-jax)")
    out = {}
    for line in sums_file.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.strip().lstrip("*")] = digest
    return out


@functools.cache
def verified(relpath: str) -> Path:
    """Path of an embedded file after checking it against SHA256SUMS (once per process)."""
    root = data_root()
    path = root / relpath
    expected = _sums(root).get(relpath)
    if expected is None:
        raise UserError(f"{relpath} is not listed in {root / 'SHA256SUMS'}")
    if not path.is_file():
        raise UserError(f"embedded data file {path} is missing (re-clone or reinstall aigc-jax)")
    got = _sha256(path)
    if got != expected:
        raise UserError(
            f"embedded data file {path} is corrupt: sha256 {got[:16]}... does not match SHA256SUMS "
            f"{expected[:16]}... (re-clone or reinstall aigc-jax)"
        )
    return path
