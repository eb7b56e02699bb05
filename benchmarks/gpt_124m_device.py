"""`gpt-124m` train-step time and MFU on an accelerator (the one prepared script for a lent GPU).

    python benchmarks/gpt_124m_device.py [--batch 16] [--steps 30] [--no-remat] [--variant tiny] [--out FILE.json]

GPT-2-small shapes (12 layers, 12 heads, width 768, context 1024, vocab 50304), bf16 compute with float32 master
params and optimizer, per-block rematerialisation unless ``--no-remat``, on every local device (``--mesh`` default:
all on ``data``). The batches come from the experiment's own pipeline (synthetic tokens), drawn before timing, so
the figure is the jitted step's. Prints compile time, ms per step (median of ``--rounds`` rounds of ``--steps``
steps, paced like the trainer: at most two steps in flight), tokens/s, model FLOPs per step (``flops_per_token``:
6 N + 12 L T d, nanoGPT's estimate), and MFU against a bf16 matrix product measured in the same run (8192^3 on a
GPU, 2048^3 on a CPU), and against the datasheet's dense bf16 peak where the device is a known kind (H100/H200 SXM:
989 TFLOP/s). ``--variant tiny`` runs the CPU-test configuration, to check the script without an accelerator.

On the lent machine its preinstalled JAX is used; this package's other imports (Grain, Orbax, TFDS, tensorboardX)
must be carried there as wheels if its image lacks them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_jax.api import get_config  # noqa: E402
from aigc_jax.data import sources  # noqa: E402
from aigc_jax.data.pipeline import train_iterator  # noqa: E402
from aigc_jax.parallel import mesh as meshlib  # noqa: E402
from aigc_jax.train.setup import build_setup  # noqa: E402
from benchmarks._report import emit, matmul_peak, paced_steps  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, FLOP/s, by a substring of device_kind.
DATASHEET_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16, help="global batch (sequences of 1024 tokens)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-remat", action="store_true")
    ap.add_argument("--variant", default="", help="'tiny' for a CPU check of the script")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    overrides = [f"data.batch_size={args.batch}", f"model.remat={not args.no_remat}"]
    cfg = get_config("gpt-124m", overrides, variant=args.variant)
    setup = build_setup(cfg)
    it = train_iterator(sources.for_experiment(cfg, "train"), cfg.data, cfg.data.batch_size)
    batches = [meshlib.to_global(next(it), setup.batch_sharding) for _ in range(args.steps)]

    state = setup.init_state(0)
    t = time.perf_counter()
    compiled = setup.train_step.lower(state, batches[0]).compile()
    compile_s = time.perf_counter() - t
    state, metrics = compiled(state, batches[0])
    first_loss = float(metrics["loss"])

    seconds = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        state, metrics = paced_steps(compiled, state, batches)
        seconds.append((time.perf_counter() - t) / args.steps)
    step_s = float(np.median(seconds))

    device = jax.devices()[0]
    m = cfg.model
    tokens = args.batch * m.context
    flops = setup.model.flops_per_token() * tokens
    measured = matmul_peak(8192 if device.platform == "gpu" else 2048, "bfloat16", reps=10) * jax.device_count()
    sheet = next((v for k, v in DATASHEET_BF16.items() if k in device.device_kind), None)
    memory = device.memory_stats() or {}
    emit({
        "experiment": cfg.name, "jax": jax.__version__, "device": device.device_kind, "devices": jax.device_count(),
        "config": {"layers": m.layers, "heads": m.heads, "width": m.width, "context": m.context,
                   "vocab": m.vocab_size, "batch": args.batch, "remat": m.remat, "compute_dtype": m.compute_dtype},
        "compile_s": round(compile_s, 1), "ms_per_step": round(step_s * 1e3, 2),
        "rounds_ms": [round(s * 1e3, 2) for s in seconds], "tokens_per_sec": round(tokens / step_s),
        "model_flops_per_step": flops, "bf16_matmul_peak_tflops": round(measured / 1e12, 1),
        "mfu_vs_measured_bf16": round(flops / step_s / measured, 3),
        "mfu_vs_datasheet_bf16": round(flops / step_s / (sheet * jax.device_count()), 3) if sheet else None,
        "loss_first_step": first_loss, "loss_last_step": float(metrics["loss"]),
        "peak_memory_gib": round(memory["peak_bytes_in_use"] / 2**30, 2) if "peak_bytes_in_use" in memory else None,
    }, args.out)


if __name__ == "__main__":
    main()
