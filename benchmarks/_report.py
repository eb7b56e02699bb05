"""Shared output of the benchmark scripts: one JSON object on stdout, optionally also written to a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from aigc_jax.train.bench import best_seconds, host_info, matmul_peak  # noqa: F401  (the scripts import them from here)


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


def host() -> dict:
    """The CPU the figures come from (sessions land on different hosts: the same script gives other numbers)."""
    return host_info()


def emit(result: dict, out: str = "") -> None:
    """Print ``result`` (with the `host` it ran on) as JSON; also write it to ``out`` when given."""
    text = json.dumps({**result, "host": host()}, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def paced_steps(step, state, batches):
    """``state, metrics = step(state, batch)`` over ``batches``, paced as the trainer paces its steps
    (`meshlib.InFlight`); returns the final ``(state, metrics)`` once the state is ready."""
    import jax

    from aigc_jax.parallel.mesh import InFlight

    in_flight, metrics = InFlight(), None
    for batch in batches:
        state, metrics = step(state, batch)
        in_flight.push(metrics)
    jax.block_until_ready(state)
    return state, metrics


def readme_block(begin: str, end: str, text: str, what: str, command: str, write: bool, check: bool,
                 readme: str = "README.md") -> int:
    """Print ``text`` (a generated README table), or with ``write`` put it between the ``begin`` and ``end``
    markers of ``readme`` (README.md, or benchmarks/README.md; relative to the repository), or with ``check``
    return 1 when that block differs from it."""
    name = readme
    readme = Path(__file__).resolve().parent.parent / readme
    doc = readme.read_text()
    start, stop = doc.index(begin) + len(begin), doc.index(end)
    if check:
        same = doc[start:stop].strip() == text.strip()
        print(f"{name}'s {what} matches the JSON" if same else f"{name}'s {what} differs: run {command}")
        return 0 if same else 1
    if write:
        readme.write_text(doc[:start] + "\n" + text + "\n" + doc[stop:])
        print(f"wrote {name}")
    else:
        print(text)
    return 0


def readme_table_main(description: str, begin: str, end: str, table, what: str, command: str) -> int:
    """The ``[--write | --check]`` command line of a script that generates one README table (`readme_block`);
    ``table()`` makes its text."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--write", action="store_true")
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    return readme_block(begin, end, table(), what, command, args.write, args.check)
