"""Where the GPT default's step time goes on a CPU host: the split over one XLA device per core against one core's
share of it, alone and beside a twin, the gradient all-reduce alone, and the host's part of the input pipeline, in
one run.

    python -m benchmarks.gpt_step_split [--rounds 3] [--steps 100] [--out benchmarks/results/gpt_step_split_cpu.json]

Each measurement runs in a fresh process (the device count is fixed when JAX starts), the kinds alternating over
``--rounds`` rounds; each reports the median of 3 timed blocks of ``--steps`` after 10 warm-up calls, and the JSON
the median over rounds:

- ``split``: the step `aigc-jax train gpt-shakespeare-char-cpu` runs with the fast defaults (the batch of 12 over
  one XLA device per core; bfloat16 where the CPU has it), on one placed batch, paced as the trainer paces it; with
  the share of the cores' time that stayed idle while it ran (``/proc/stat``);
- ``one_core_half``: the same program on one device with half the batch (6), in a process pinned to one core: what
  each device of the split computes, with no partner to wait for;
- ``two_halves_at_once``: two such processes at the same time, one on each of two cores, independent (no
  reduction): the slower one's ms per step. What the cores deliver for the split's work when nothing is shared; if
  ``split`` takes longer, the difference is lost inside the one process (its shared thread pool, the rendezvous);
- ``all_reduce``: the step's gradient all-reduce alone: ``shard_map`` + ``psum`` over the devices of ``split``, of
  one float32 buffer of the size the step reduces (gradient, loss and metrics, flattened), against an elementwise
  op over the same buffer;
- ``pipeline``: the host's part of each step's input: the next batch from the trainer's Grain iterator, and placing
  it on the devices.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks._report import emit

EXPERIMENT = "gpt-shakespeare-char-cpu"


def _cpu_jiffies() -> tuple[int, int]:
    """``(idle, total)`` jiffies of all cores so far (Linux ``/proc/stat``)."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)


def _blocks(fn, steps: int) -> float:
    """Median ms per call of ``fn()`` (one call per step) over 3 blocks of ``steps`` calls, after 10 warm-up calls."""
    fn(10)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn(steps)
        times.append((time.perf_counter() - t) / steps * 1e3)
    return statistics.median(times)


def _child(kind: str, steps: int, core: int) -> dict:
    if kind == "one_core_half":
        os.sched_setaffinity(0, {core})  # before JAX starts its threads
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1")
    from aigc_jax.api import get_config
    from aigc_jax.train import host

    overrides = ["data.batch_size=6"] if kind == "one_core_half" else []
    cfg, line = host.fast_config(EXPERIMENT, get_config(EXPERIMENT, overrides), overrides)
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from aigc_jax.data import sources
    from aigc_jax.data.pipeline import train_iterator
    from aigc_jax.parallel import mesh as meshlib
    from aigc_jax.train.setup import build_setup
    from benchmarks._report import paced_steps

    setup = build_setup(cfg)
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    out = {"devices": setup.mesh.devices.size, "batch": cfg.data.batch_size,
           "compute_dtype": cfg.model.declared_compute_dtype or "float32", "fast_defaults": line}
    if kind == "pipeline":
        def place(n):
            for _ in range(n):
                batch = meshlib.to_global(next(it), setup.batch_sharding)
            jax.block_until_ready(batch)

        return {**out, "ms_per_step": round(_blocks(place, steps), 4)}
    if kind == "all_reduce":
        # The step's flat buffer: the gradient and the loss (the GPT's step reports no other metric).
        size = sum(x.size for x in jax.tree.leaves(setup.abstract_state["params"])) + 1
        mesh = setup.mesh
        axes = tuple(mesh.axis_names)
        x = jax.device_put(np.ones((mesh.devices.size, size), np.float32),
                           jax.sharding.NamedSharding(mesh, P(axes)))

        def timed(body):
            fn = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=P(axes), out_specs=P(axes)))

            def run(n):
                for _ in range(n):  # one at a time: queued collectives wait on each other's rendezvous
                    jax.block_until_ready(fn(x))
            return round(_blocks(run, steps), 4)

        return {**out, "floats": size, "psum_ms": timed(lambda v: jax.lax.psum(v, axes)),
                "elementwise_ms": timed(lambda v: v * jnp.float32(1.0001))}
    state = setup.init_state(cfg.train.seed)
    batch = meshlib.to_global(next(it), setup.batch_sharding)

    def run(n):
        nonlocal state
        state, _ = paced_steps(setup.train_step, state, [batch] * n)

    run(10)  # the compile, outside the idle-share window
    idle0, total0 = _cpu_jiffies()
    ms = _blocks(run, steps)
    idle1, total1 = _cpu_jiffies()
    return {**out, "ms_per_step": round(ms, 3), "idle_share": round((idle1 - idle0) / max(total1 - total0, 1), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default="")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--core", type=int, default=-1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if args.child:
        print(json.dumps(_child(args.child, args.steps, args.core if args.core >= 0 else cores[0])))
        return

    def start(kind, core=-1):
        return subprocess.Popen([sys.executable, "-m", "benchmarks.gpt_step_split", "--child", kind, "--steps",
                                 str(args.steps), "--core", str(core)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def result(proc, kind):
        out, err = proc.communicate()
        if proc.returncode:
            sys.exit(f"{kind} failed:\n{err[-3000:]}")
        return json.loads(out.strip().splitlines()[-1])

    kinds = ("split", "one_core_half", "two_halves_at_once", "all_reduce", "pipeline")
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for r in range(args.rounds):
        for kind in kinds:
            if kind == "two_halves_at_once":  # one half on each of two cores, independent processes, same time
                procs = [start("one_core_half", c) for c in cores[:2]]
                halves = [result(p, kind) for p in procs]
                runs[kind].append({**halves[0], "ms_per_step": max(h["ms_per_step"] for h in halves),
                                   "per_process_ms": [h["ms_per_step"] for h in halves]})
            else:
                runs[kind].append(result(start(kind), kind))
            last = runs[kind][-1]
            print(f"round {r + 1}: {kind} {last.get('ms_per_step', last.get('psum_ms'))} ms", file=sys.stderr)

    def median(kind, key):
        return round(statistics.median(x[key] for x in runs[kind]), 4)

    split, half = runs["split"][0], runs["one_core_half"][0]
    emit({"benchmark": "gpt_step_split", "experiment": EXPERIMENT, "rounds": args.rounds, "steps": args.steps,
          "fast_defaults": split["fast_defaults"],
          "split": {"devices": split["devices"], "batch": split["batch"], "compute_dtype": split["compute_dtype"],
                    "ms_per_step": median("split", "ms_per_step"), "idle_share": median("split", "idle_share")},
          "one_core_half": {"devices": half["devices"], "batch": half["batch"],
                            "compute_dtype": half["compute_dtype"],
                            "ms_per_step": median("one_core_half", "ms_per_step")},
          "two_halves_at_once": {"ms_per_step": median("two_halves_at_once", "ms_per_step")},
          "split_over_one_core_half": round(median("split", "ms_per_step") / median("one_core_half", "ms_per_step"),
                                            3),
          "split_over_two_halves_at_once": round(median("split", "ms_per_step")
                                                 / median("two_halves_at_once", "ms_per_step"), 3),
          "all_reduce": {"floats": runs["all_reduce"][0]["floats"], "psum_ms": median("all_reduce", "psum_ms"),
                         "elementwise_ms": median("all_reduce", "elementwise_ms")},
          "pipeline_ms_per_step": median("pipeline", "ms_per_step"),
          "per_round": {k: [{n: v for n, v in x.items() if n != "fast_defaults"} for x in xs]
                        for k, xs in runs.items()},
          "command": "python -m benchmarks.gpt_step_split" + (f" --rounds {args.rounds}" if args.rounds != 3 else "")
                     + (f" --steps {args.steps}" if args.steps != 100 else "")
                     + (f" --out {args.out}" if args.out else "")}, args.out)


if __name__ == "__main__":
    main()
