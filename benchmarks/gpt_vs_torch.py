"""Our GPT train step against a PyTorch twin (same shapes, batch, AdamW, clipping; eager), same run, same machine.

    python benchmarks/gpt_vs_torch.py [--steps 40] [--out FILE.json]

For `gpt-shakespeare-char-cpu` (4 layers, width 128, context 64, batch 12) and one larger CPU size (6 layers,
width 192, context 128, batch 16) it prints steps/s of each and their ratio, model FLOPs per step
(6 N per token for the weights + 12 L D T for attention, N without position embeddings; nanoGPT's estimate) and
MFU against the float32 matmul peak measured in the same script. Both loops read the same Tiny Shakespeare
windows; JAX uses the trainer's jitted step (donated state, explicit shardings, NaN guard).
Rounds alternate between the two frameworks (medians) so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import LoadAverage, emit, omp_wait_policy  # noqa: E402

from aigc_jax.api import get_config  # noqa: E402
from aigc_jax.data import sources  # noqa: E402
from aigc_jax.data.pipeline import train_iterator  # noqa: E402
from aigc_jax.parallel import mesh as meshlib  # noqa: E402
from aigc_jax.train.setup import build_setup  # noqa: E402

SIZES = {
    "gpt-shakespeare-char-cpu": [],
    "cpu-large (6L, width 192, ctx 128, batch 16)": ["model.layers=6", "model.heads=6", "model.width=192",
                                                      "model.context=128", "data.batch_size=16"],
}


def matmul_peak(n: int = 1024, reps: int = 20) -> float:
    """Measured float32 matmul FLOP/s of XLA on this machine (n x n x n)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            r = f(a)
        r.block_until_ready()
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best


def bench(name, overrides, steps, rounds, peak):
    from torch_gpt import make_twin

    cfg = get_config("gpt-shakespeare-char-cpu", overrides)
    m = cfg.model
    setup = build_setup(cfg)
    src = sources.for_experiment(cfg, "train")
    it = train_iterator(src, cfg.data, cfg.data.batch_size)
    batches = [next(it) for _ in range(steps)]
    state = setup.init_state(0)
    gbatches = [meshlib.to_global(b, setup.batch_sharding) for b in batches]
    state, _ = setup.train_step(state, gbatches[0])  # compile
    jax.block_until_ready(state)
    tstep, torch, n_torch = make_twin(m.vocab_size, m.context, m.layers, m.heads, m.width, threads=os.cpu_count())
    tstep(batches[0]["tokens"])  # warm-up

    jax_rates, torch_rates = [], []
    holder = {"state": state}
    for _ in range(rounds):
        s = holder["state"]
        t = time.perf_counter()
        for b in batches:
            s, metrics = setup.train_step(s, meshlib.to_global(b, setup.batch_sharding))
        jax.block_until_ready(s)
        jax_rates.append(steps / (time.perf_counter() - t))
        holder["state"] = s
        t = time.perf_counter()
        for b in batches:
            loss = tstep(b["tokens"])
        float(loss.detach())
        torch_rates.append(steps / (time.perf_counter() - t))
    jax_sps, torch_sps = float(np.median(jax_rates)), float(np.median(torch_rates))
    tokens = cfg.data.batch_size * m.context
    flops_step = setup.model.flops_per_token() * tokens
    n_jax = sum(int(x.size) for x in jax.tree.leaves(holder["state"]["params"]))
    return {
        "config": {"layers": m.layers, "heads": m.heads, "width": m.width, "context": m.context,
                   "batch": cfg.data.batch_size, "params": n_jax, "params_torch": n_torch},
        "jax_steps_per_sec": round(jax_sps, 2),
        "torch_steps_per_sec": round(torch_sps, 2),
        "jax_over_torch": round(jax_sps / torch_sps, 3),
        "jax_rounds": [round(x, 2) for x in jax_rates],
        "torch_rounds": [round(x, 2) for x in torch_rates],
        "model_flops_per_step": flops_step,
        "jax_mfu": round(flops_step * jax_sps / peak, 3),
        "torch_mfu": round(flops_step * torch_sps / peak, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print(json.dumps({"skipped": "torch not installed (pip install -e '.[bench]')"}))
        return
    load = LoadAverage()
    peak = matmul_peak()
    result = {"jax": jax.__version__, "torch": torch.__version__, "cpu_count": os.cpu_count(),
              "omp_wait_policy": omp_wait_policy(), "matmul_peak_gflops": round(peak / 1e9, 1), "sizes": {}}
    for name, overrides in SIZES.items():
        result["sizes"][name] = bench(name, overrides, args.steps, args.rounds, peak)
    result["load_avg_1m"] = load.record()
    emit(result, args.out)


if __name__ == "__main__":
    main()
