"""`ddpm-cifar10` and `flow-cifar10` on an accelerator (the prepared script for a lent GPU): train-step time and MFU
of the DDPM paper's 35.7M-parameter U-Net at batch 128, sampling throughput, and the exported sampler run on the
accelerator against the library's samples.

    python -m benchmarks.diffusion_device [--steps 20] [--variant tiny] [--out FILE.json]      # on the GPU
    python -m benchmarks.diffusion_device --count-flops FILE.json --out benchmarks/results/diffusion_device_h200.json

For each experiment: the default configuration's jitted train step (compile time; ms per step as the median of
``--rounds`` rounds of ``--steps`` steps, paced like the trainer; the step's FLOPs from XLA's cost analysis of the
lowered program; MFU against float32 and bf16 matrix products measured in the same run, 8192^3 on a GPU, float32 at
JAX's default precision, which the models' float32 convolutions also run at); the jitted sampler's images/s at the
model's default sampler and step count for a batch of ``--sample-batch``; then `aigc_jax.export.export_sampler` of
the trained weights at ``--export-steps`` sampler steps, lowered for cpu, cuda and tpu, deserialized and called here
on ``--export-batch`` per-example keys: its rows against the library's ``model.sample(params, key_i, 1)`` (maximum
absolute difference), with the artifact's size and first-call time. The batches come from the experiment's own
pipeline (the embedded CIFAR-10 subset). ``--variant tiny`` runs the CPU-test configurations, to check the script
without an accelerator. ``--count-flops`` completes a GPU result on a CPU (`count_flops`).

On the lent machine its preinstalled JAX is used; this package's other imports (Grain, tensorboardX) are carried
there as wheels where its image lacks them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_jax.api import get_config  # noqa: E402
from aigc_jax.core.contract import sampling_params  # noqa: E402
from aigc_jax.data import sources  # noqa: E402
from aigc_jax.data.pipeline import train_iterator  # noqa: E402
from aigc_jax.export import export_sampler  # noqa: E402
from aigc_jax.parallel import mesh as meshlib  # noqa: E402
from aigc_jax.train.aot import _cost  # noqa: E402
from aigc_jax.train.setup import build_setup  # noqa: E402
from benchmarks._report import emit, matmul_peak, paced_steps  # noqa: E402


def _mfu(flops, step_s: float, peaks: dict) -> dict:
    return {f"mfu_vs_measured_{k}": round(flops / step_s / v, 4) if flops else None for k, v in peaks.items()}


def count_flops(result: dict) -> dict:
    """``result`` with each experiment's ``flops_per_step`` and MFU from the CPU backend's cost analysis of the same
    lowered train step (abstract shapes, nothing run). XLA's GPU backend counts no FLOPs in a lowered program and,
    once compiled, leaves the cuDNN convolutions out (80.8 GFLOP for ddpm-cifar10's 4.48 TFLOP step); the program
    before optimisation is the same on every backend, so its count carries over."""
    from aigc_jax.train.aot import abstract_batch

    peaks = {k: v * 1e12 for k, v in result["matmul_peak_tflops"].items()}
    rows = []
    for row in result["experiments"]:
        setup = build_setup(get_config(row["experiment"], [], variant=row["variant"]))
        flops = _cost(setup.train_step.lower(setup.abstract_state, abstract_batch(setup))).get("flops")
        rows.append({**row, "flops_per_step": flops, **_mfu(flops, row["ms_per_step"] / 1e3, peaks),
                     "flops_counted_on": jax.default_backend()})
    return {**result, "experiments": rows}


def measure(name: str, args, peaks: dict) -> dict:
    cfg = get_config(name, [], variant=args.variant)
    setup = build_setup(cfg)
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    batches = [meshlib.to_global(next(it), setup.batch_sharding) for _ in range(args.steps)]
    state = setup.init_state(0)
    t = time.perf_counter()
    lowered = setup.train_step.lower(state, batches[0])
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    flops = _cost(lowered).get("flops")  # the whole step before XLA; None on a GPU backend (see count_flops)
    state, metrics = compiled(state, batches[0])
    first_loss = float(metrics["loss"])
    seconds = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        state, metrics = paced_steps(compiled, state, batches)
        seconds.append((time.perf_counter() - t) / args.steps)
    step_s = float(np.median(seconds))
    row = {"experiment": name, "variant": args.variant, "batch": setup.examples_per_step,
           "params": int(sum(np.size(a) for a in jax.tree.leaves(state["params"]))),
           "compile_s": round(compile_s, 1), "ms_per_step": round(step_s * 1e3, 2),
           "rounds_ms": [round(s * 1e3, 2) for s in seconds], "images_per_sec_train": round(setup.examples_per_step
                                                                                            / step_s, 1),
           "flops_per_step": flops, **_mfu(flops, step_s, peaks),
           "loss_first_step": first_loss, "loss_last_step": float(metrics["loss"])}
    print(row, file=sys.stderr, flush=True)

    # Sampling: the model's default sampler, jitted over the batch, at the trained weights.
    model = setup.model
    params = sampling_params(model, state["params"], state["model_state"])
    m = cfg.model
    sample = jax.jit(lambda p, k: model.sample(p, k, args.sample_batch))
    t = time.perf_counter()
    jax.block_until_ready(sample(params, jax.random.key(1)))
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(sample(params, jax.random.key(2)))
    sample_s = time.perf_counter() - t
    row["sampling"] = {"sampler": m.sampler, "steps": m.sample_steps, "batch": args.sample_batch,
                       "compile_and_first_s": round(first_s, 1), "seconds": round(sample_s, 3),
                       "images_per_sec": round(args.sample_batch / sample_s, 1)}
    print(row["sampling"], file=sys.stderr, flush=True)

    # The exported sampler on this accelerator against the library's per-example samples.
    settings = {"steps": args.export_steps}
    blob, d = export_sampler(model, params, settings=settings)
    exp = jax.export.deserialize(blob)
    keys = jax.random.split(jax.random.key(7), args.export_batch)
    got = np.asarray(exp.call(np.asarray(jax.random.key_data(keys))))
    one = jax.jit(lambda p, k: model.sample(p, k, 1, **settings)[0])
    want = np.stack([np.asarray(one(params, keys[i])) for i in range(args.export_batch)])
    row["export"] = {"settings": settings, "platforms": d["platforms"], "size_bytes": d["size_bytes"],
                     "lowering_seconds": d["lowering_seconds"],
                     "first_call_compile_seconds": d["first_call_compile_seconds"], "batch": args.export_batch,
                     "max_abs_diff_vs_library": float(np.max(np.abs(got - want))),
                     "output_range": [float(got.min()), float(got.max())]}
    print(row["export"], file=sys.stderr, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="ddpm-cifar10,flow-cifar10")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--export-steps", type=int, default=10)
    ap.add_argument("--export-batch", type=int, default=4)
    ap.add_argument("--variant", default="", help="'tiny' for a CPU check of the script")
    ap.add_argument("--out", default="")
    ap.add_argument("--count-flops", metavar="RESULT.json", default="",
                    help="on a CPU: fill in a GPU result's FLOPs and MFU (count_flops) and print it (or write --out)")
    args = ap.parse_args()
    if args.count_flops:
        result = json.loads(Path(args.count_flops).read_text())
        result["measured_on_host"] = result.pop("host")  # `host` becomes the CPU that counted the FLOPs
        emit(count_flops(result), args.out)
        return

    device = jax.devices()[0]
    n = 8192 if device.platform == "gpu" else 2048
    peaks = {d: matmul_peak(n, d, reps=10) * jax.device_count() for d in ("float32", "bfloat16")}
    print(f"{device.device_kind}: matmul TFLOP/s {({k: round(v / 1e12, 1) for k, v in peaks.items()})}",
          file=sys.stderr, flush=True)
    rows = [measure(name, args, peaks) for name in args.only.split(",")]
    memory = device.memory_stats() or {}
    emit({"benchmark": "diffusion_device", "jax": jax.__version__, "device": device.device_kind,
          "devices": jax.device_count(), "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
          "matmul_peak_tflops": {k: round(v / 1e12, 1) for k, v in peaks.items()}, "experiments": rows,
          "peak_memory_gib": round(memory["peak_bytes_in_use"] / 2**30, 2) if "peak_bytes_in_use" in memory
          else None}, args.out)


if __name__ == "__main__":
    main()
