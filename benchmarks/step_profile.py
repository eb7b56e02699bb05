"""Where one train step's time goes on XLA:CPU: a `jax.profiler` trace of an experiment's default step, summed per
compiled operation and per kind of operation.

    python -m benchmarks.step_profile vae-mnist [--set KEY=VALUE ...] [--no-fast-defaults] [--steps 50]
                                      [--top 25] [--out benchmarks/results/step_profile_vae_mnist.json]

The step is the one `aigc-jax train` runs on this host (the fast defaults' device split and precision unless
``--no-fast-defaults``), on one real batch, timed over ``--steps`` paced steps, then traced over as many. XLA:CPU
records every thunk it runs (fusions, ``ynn_fusion``: the products XLA hands to YNNPACK, collectives, control
flow) on its worker threads; the JSON gives each one's milliseconds per step summed over threads (so the sum exceeds
the step's wall time when the two cores work at once, and a ``while``/``cond`` also contains its body's thunks),
with the HLO line that defines it (shape, and the JAX operation it came from). Prints the JSON; ``--out`` also
writes it.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._report import emit, paced_steps


def _definitions(hlo: str) -> dict[str, str]:
    """``{op name: its defining HLO line, shortened}`` from a compiled module's text."""
    out = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.-]+) = (\S+) ", line)
        if m and m.group(1) not in out:
            meta = re.search(r'op_name="([^"]+)"', line)
            out[m.group(1)] = m.group(2) + (f"  ({meta.group(1)[-90:]})" if meta else "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("experiment")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-fast-defaults", action="store_true")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from aigc_jax.api import get_config
    from aigc_jax.train import host

    cfg = get_config(args.experiment, args.set)
    line = ""
    if not args.no_fast_defaults:
        cfg, line = host.fast_config(args.experiment, cfg, args.set)  # before JAX's backend starts
    import jax

    from aigc_jax.data import sources
    from aigc_jax.data.pipeline import train_iterator
    from aigc_jax.parallel import mesh as meshlib
    from aigc_jax.train.setup import build_setup

    setup = build_setup(cfg)
    state = setup.init_state(cfg.train.seed)
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    batch = meshlib.to_global(next(it), setup.batch_sharding)

    def run(n):
        nonlocal state
        state, _ = paced_steps(setup.train_step, state, [batch] * n)

    run(10)
    t = time.perf_counter()
    run(args.steps)
    wall_ms = (time.perf_counter() - t) / args.steps * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        run(args.steps)
        jax.profiler.stop_trace()
        trace = json.load(gzip.open(next(Path(tmp).rglob("*.trace.json.gz"))))
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in trace["traceEvents"]
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in trace["traceEvents"]:
        if (e.get("ph") == "X" and "XLAEigen" in threads.get((e["pid"], e["tid"]), "")
                and not e["name"].startswith("ThunkExecutor")):
            per_op[e["name"]] += e["dur"] / 1e3 / args.steps
    per_kind: dict[str, float] = collections.defaultdict(float)
    for name, ms in per_op.items():
        per_kind[re.sub(r"[.\d]+$", "", name)] += ms
    hlo = _definitions(setup.train_step.lower(state, batch).compile().as_text())
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:args.top]
    emit({"benchmark": "step_profile", "experiment": args.experiment, "overrides": args.set, "fast_defaults": line,
          "compute_dtype": cfg.model.declared_compute_dtype or "float32", "devices": setup.mesh.devices.size,
          "step_ms": round(wall_ms, 3), "thread_ms_per_step": round(sum(per_op.values()), 3),
          "per_kind_ms": {k: round(v, 3) for k, v in sorted(per_kind.items(), key=lambda kv: -kv[1]) if v >= 0.01},
          "top_ops": [{"op": k, "ms": round(v, 3), "hlo": hlo.get(k, "")} for k, v in top]}, args.out)


if __name__ == "__main__":
    sys.exit(main())
