"""Shared test helpers."""

import fcntl
import os
import shutil
from pathlib import Path

import jax
import jax.flatten_util
import numpy as np
from PIL import Image


def tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if jax.tree.structure(a) != jax.tree.structure(b):
        return False
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def tree_max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@jax.jit
def random_like(tree, key):
    """Standard normal noise shaped like ``tree`` (each leaf's shape and dtype) from ONE draw over the flattened
    tree: XLA compiles every `jax.random.normal` call as its own unrolled threefry program, so one draw per leaf
    made a 129-leaf U-Net's perturbation take ~13 s to compile (eagerly, one small compile per leaf shape)."""
    flat, unravel = jax.flatten_util.ravel_pytree(tree)
    return unravel(jax.random.normal(key, flat.shape, flat.dtype))


def png(path) -> Image.Image:
    """A PNG file's image, read and closed (an open file would be a ResourceWarning, an error in the suite)."""
    with Image.open(path) as im:
        im.load()
        return im.copy()


def png_size(path) -> tuple[int, int]:
    return png(path).size


# In the default run, one tiny experiment per code path; these differ from one there only in a scalar or a data
# transform (beta-vae: the KL weight; gpt-shakespeare-char-cpu: no dropout, and its run is trained in test_gpt;
# pix2pix-cifar-color: a colour-to-grey input instead of a downscaled one; ddpm-cifar10 and flow-cifar10: the
# mnist configurations' code at 32x32x3; cddpm-mnist: cflow-mnist's label path on ddpm-mnist's process;
# flow-mnist: cflow-mnist's process without labels, ddpm-mnist's unconditional U-Net) and run under `-m slow`.
COVERED = ("beta-vae-mnist", "gpt-shakespeare-char-cpu", "pix2pix-cifar-color", "ddpm-cifar10", "flow-cifar10",
           "cddpm-mnist", "flow-mnist")


def tiny_run(name: str) -> Path:
    """The run directory of experiment ``name``'s tiny configuration trained for 2 steps (checkpoint at 2), made
    once per test session and shared by every module and pytest-xdist worker that asks (a file lock makes a
    second asker wait for the first). Callers only read it: load, sample, evaluate, export."""
    import aigc_jax
    from aigc_jax.core import config as cfglib
    from aigc_jax.core.registry import get_config

    root = Path(os.environ["AIGC_JAX_TEST_RUNS"])
    wd, done = root / name, root / f"{name}.done"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(wd, ignore_errors=True)  # a half-made run of an asker that failed
            cfg = cfglib.apply_overrides(get_config(name, "tiny"), ["train.steps=2", "train.checkpoint_every=2"])
            aigc_jax.train(cfg, wd, progress=False)
            done.touch()
    return wd
