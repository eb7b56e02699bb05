"""Shared output of the benchmark scripts: one JSON object on stdout, optionally also written to a file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def omp_wait_policy() -> str:
    """OpenMP's wait policy: eager torch with the default spin-waiting slows down many times when other processes
    share the cores (XLA does not), so every torch figure records it."""
    return os.environ.get("OMP_WAIT_POLICY", "default")


class LoadAverage:
    """The 1-minute load average at creation and at ``record()``: ``load = LoadAverage(); ...; load.record()``."""

    def __init__(self):
        self.before = os.getloadavg()[0]

    def record(self) -> dict:
        return {"before": round(self.before, 2), "after": round(os.getloadavg()[0], 2)}


def emit(result: dict, out: str = "") -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def best_seconds(fn, args, rounds: int, reps: int) -> float:
    """Seconds per call of the JAX function ``fn(*args)``: one warm-up call, then the best of ``rounds`` rounds of
    ``reps`` back-to-back calls (the last result awaited)."""
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(reps):
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - t) / reps)
    return best
