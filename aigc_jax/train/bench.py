"""``aigc-jax bench``: the speed of each experiment's default train step on this machine.

For every experiment asked for, one child process does what ``aigc-jax train EXPERIMENT`` does before its first
step (the same fast defaults for this host: device split, compute dtype; see `aigc_jax.train.host`), then compiles
the train step (timed), reads XLA's FLOP count of it, and times steps fed by the experiment's own data pipeline
and paced as the trainer paces them. A child per experiment because the number of XLA CPU devices is fixed when
JAX starts, and the fast defaults choose it per experiment.

The parent measures the matmul peak of this machine in the same run (an ``n x n`` product, float32 and, where the
CPU has native bfloat16, bfloat16), so MFU = FLOPs per step x steps/s / the peak of the step's compute dtype.
XLA's FLOP count includes everything the step computes (optimizer, moving averages, the random numbers'
arithmetic), not only the model's matmuls: MFU here is "useful" only where matmuls dominate.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MIN_STEPS = 3


def host_info() -> dict:
    """The CPU the figures come from (hosts differ between machines of one type: record it with every number)."""
    from aigc_jax.train import host

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(), "cores": host.cpu_cores(),
            "native_bf16": host.native_bf16()}


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


def matmul_peak(n: int = 2048, dtype: str = "float32", reps: int = 20) -> float:
    """Measured FLOP/s of XLA's ``n x n x n`` matrix product of ``dtype`` operands on the default device,
    accumulated and returned in float32 as the models' products are (`aigc_jax.nn.dense`; on XLA:CPU a product
    with a bfloat16 result takes a slower path)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    product = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    return 2 * n**3 / best_seconds(product, (a,), rounds=3, reps=reps)


def measure(experiment: str, overrides: list[str], seconds: float, fast: bool) -> dict:
    """In a fresh process: the experiment's default train step, as ``aigc-jax train`` would run it here."""
    from aigc_jax.api import get_config
    from aigc_jax.train import host

    cfg = get_config(experiment, overrides)
    line = ""
    if fast:
        cfg, line = host.fast_config(experiment, cfg, overrides)
    import jax

    from aigc_jax.data import sources
    from aigc_jax.data.pipeline import train_iterator
    from aigc_jax.parallel import mesh as meshlib
    from aigc_jax.train.aot import _cost
    from aigc_jax.train.setup import build_setup

    setup = build_setup(cfg)
    state = setup.init_state(cfg.train.seed)
    src = sources.for_experiment(cfg, "train", setup.model.spec)
    iterator = train_iterator(src, cfg.data, setup.examples_per_step)

    def batch():
        return meshlib.to_global(next(iterator), setup.batch_sharding)

    first = batch()
    t = time.perf_counter()
    lowered = setup.train_step.lower(state, first)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    devices = setup.mesh.devices.size
    # The whole step's FLOPs from the program before XLA's optimisation and partitioning (the model's FLOPs,
    # not a rematerialised recount). XLA's GPU backend counts none there, and after compiling it leaves its cuDNN
    # convolutions out (80.8 GFLOP of ddpm-cifar10's 4.48 TFLOP step): no FLOPs and no MFU rather than a wrong
    # one; benchmarks/diffusion_device.py --count-flops completes such a result on a CPU.
    flops = _cost(lowered).get("flops")
    in_flight = meshlib.InFlight()

    def run(n):
        nonlocal state
        for _ in range(n):
            state, metrics = compiled(state, batch())
            in_flight.push(metrics)
        jax.block_until_ready(state)

    run(1)  # warm-up: first-call allocations
    t = time.perf_counter()
    run(MIN_STEPS)  # the step time that sizes the timed run
    steps = max(MIN_STEPS, int(seconds * MIN_STEPS / max(time.perf_counter() - t, 1e-6)))
    t = time.perf_counter()
    run(steps)
    elapsed = time.perf_counter() - t
    dtype = cfg.model.declared_compute_dtype or "float32"
    return {"experiment": experiment, "steps_per_sec": steps / elapsed, "examples_per_sec":
            steps * setup.examples_per_step / elapsed, "batch": setup.examples_per_step,
            "compile_s": compile_s, "timed_steps": steps, "devices": devices, "compute_dtype": dtype,
            "flops_per_step": flops or None, "fast_defaults": line}


def _child_main() -> None:
    """``python -c 'from aigc_jax.train.bench import _child_main; _child_main()' JSON``: one measurement as JSON
    on the last line of stdout (a user mistake: one line on stderr and exit 2)."""
    from aigc_jax.core.errors import UserError
    from aigc_jax.train.aot import quiet_libtpu_if_no_tpu

    quiet_libtpu_if_no_tpu()
    args = json.loads(sys.argv[1])
    try:
        print(json.dumps(measure(**args)))
    except UserError as e:
        print(f"aigc-jax: error: {e}", file=sys.stderr)
        sys.exit(2)


def bench(experiments: list[str], overrides: list[str], seconds: float, fast: bool, progress=print) -> dict:
    """Every experiment's measurement (each in a child process), with this machine's matmul peaks and MFU."""
    import jax

    from aigc_jax.core.errors import UserError
    from aigc_jax.train import host

    cpu = jax.devices()[0].platform == "cpu"
    n = 2048 if cpu else 8192  # an accelerator's peak needs a product several times its cache
    peaks = {"float32": matmul_peak(n, dtype="float32")}
    if host.native_bf16() or not cpu:
        peaks["bfloat16"] = matmul_peak(n, dtype="bfloat16")
    rows = []
    for name in experiments:
        progress(f"bench {name} ...")
        args = json.dumps({"experiment": name, "overrides": overrides, "seconds": seconds, "fast": fast})
        code = "from aigc_jax.train.bench import _child_main; _child_main()"
        env = {**os.environ, "AIGC_JAX_FAST_DEFAULTS": "1" if fast else "0"}
        r = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
            if r.returncode == 2 and last.startswith("aigc-jax: error: "):
                raise UserError(last.removeprefix("aigc-jax: error: "))
            raise RuntimeError(f"bench {name}: the measuring process failed (exit {r.returncode}): {last}")
        row = json.loads(r.stdout.strip().splitlines()[-1])
        peak = peaks.get(row["compute_dtype"], peaks["float32"])
        row["mfu"] = row["flops_per_step"] * row["steps_per_sec"] / peak if row["flops_per_step"] else None
        rows.append(row)
    return {"benchmark": "bench", "peak_flops": peaks, "seconds_per_experiment": seconds, "fast_defaults": fast,
            "overrides": overrides, "jax": jax.__version__, "backend": jax.devices()[0].platform,
            "host": host_info(), "experiments": rows}


def table(result: dict) -> str:
    """The measurements as a Markdown table."""
    peaks = ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in result["peak_flops"].items())
    lines = [f"| experiment | steps/s | examples/s | compile (s) | devices, dtype | MFU ({peaks}) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in result["experiments"]:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        lines.append(f"| `{r['experiment']}` | {r['steps_per_sec']:.1f} | {r['examples_per_sec']:,.0f} | "
                     f"{r['compile_s']:.1f} | {r['devices']}, {r['compute_dtype']} | {mfu} |")
    return "\n".join(lines)
