"""Our GPT train step against a PyTorch twin (same shapes, batch, AdamW, clipping; eager), same run, same machine.

    python benchmarks/gpt_vs_torch.py [--steps 40] [--rounds 3] [--out FILE.json]

For `gpt-shakespeare-char-cpu` (4 layers, width 128, context 64, batch 12) and one larger CPU size (6 layers,
width 192, context 128, batch 16) it prints steps/s of each variant and the ratios, model FLOPs per step
(6 N per token for the weights + 12 L D T for attention, N without position embeddings; nanoGPT's estimate) and
MFU against the float32 matmul peak measured in the same script. Both frameworks read the same Tiny Shakespeare
windows; JAX uses the trainer's jitted step (donated state, explicit shardings, NaN guard).

Variants, all on the same cores:
- ``jax_f32``: float32, one XLA device (the like-for-like peer of ``torch_f32``);
- ``jax_bf16``: ``model.compute_dtype=bfloat16`` (float32 master params and optimizer), one device;
- ``jax_bf16_ndev`` / ``jax_f32_ndev``: the same step data-parallel over the host split into one XLA device per
  core (``--xla_force_host_platform_device_count``, set here before JAX starts), i.e. ``--mesh data=N``;
- ``torch_f32``: eager float32; ``torch_bf16``: eager under ``torch.autocast("cpu", torch.bfloat16)``.
Rounds alternate between the variants (medians) so machine noise hits all alike; each timing starts half a second
after the previous one ends, so that torch's spinning OpenMP threads do not slow the next variant.
"""

from __future__ import annotations

import os

CORES = os.cpu_count() or 1
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={CORES}").strip()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import LoadAverage, emit, matmul_peak, omp_wait_policy, paced_steps  # noqa: E402

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
BF16 = ["model.compute_dtype=bfloat16"]


def jax_runner(overrides, devices, batches):
    """A function that runs our train step over ``batches`` and returns when the state is ready."""
    setup = build_setup(get_config("gpt-shakespeare-char-cpu", overrides), meshlib.make_mesh("", devices))
    holder = {"state": setup.init_state(0)}

    def run():
        global_batches = (meshlib.to_global(b, setup.batch_sharding) for b in batches)
        holder["state"], _ = paced_steps(setup.train_step, holder["state"], global_batches)

    return run, setup


def torch_runner(m, batches, autocast: bool):
    from torch_gpt import make_twin

    tstep, torch, n_torch = make_twin(m.vocab_size, m.context, m.layers, m.heads, m.width, threads=CORES)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext

    def run():
        for b in batches:
            with ctx():
                loss = tstep(b["tokens"])
        float(loss.detach())

    return run, n_torch


def bench(overrides, steps, rounds, peak):
    cfg = get_config("gpt-shakespeare-char-cpu", overrides)
    m = cfg.model
    it = train_iterator(sources.for_experiment(cfg, "train"), cfg.data, cfg.data.batch_size)
    batches = [next(it) for _ in range(steps)]
    one, every = jax.devices()[:1], jax.devices()
    runners, setups = {}, {}
    for name, extra, devices in [("jax_f32", [], one), ("jax_bf16", BF16, one),
                                 ("jax_f32_ndev", [], every), ("jax_bf16_ndev", BF16, every)]:
        if devices is every and (len(every) < 2 or cfg.data.batch_size % len(every)):
            continue
        runners[name], setups[name] = jax_runner([*overrides, *extra], devices, batches)
    runners["torch_f32"], n_torch = torch_runner(m, batches, autocast=False)
    runners["torch_bf16"], _ = torch_runner(m, batches, autocast=True)
    for run in runners.values():  # compile / warm up
        run()
    rates = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(0.5)  # let the previous variant's threads go idle (OpenMP spins ~200 ms after a region)
            t = time.perf_counter()
            run()
            rates[name].append(steps / (time.perf_counter() - t))
    sps = {name: float(np.median(r)) for name, r in rates.items()}
    flops_step = setups["jax_f32"].model.flops_per_token() * cfg.data.batch_size * m.context
    best_jax = max((n for n in sps if n.startswith("jax")), key=sps.get)
    best_torch = max(("torch_f32", "torch_bf16"), key=sps.get)
    return {
        "config": {"layers": m.layers, "heads": m.heads, "width": m.width, "context": m.context,
                   "batch": cfg.data.batch_size, "params": n_torch, "jax_devices_ndev": len(jax.devices())},
        "steps_per_sec": {name: round(v, 2) for name, v in sps.items()},
        "rounds": {name: [round(x, 2) for x in r] for name, r in rates.items()},
        "jax_f32_over_torch_f32": round(sps["jax_f32"] / sps["torch_f32"], 3),
        "jax_bf16_over_torch_bf16": round(sps["jax_bf16"] / sps["torch_bf16"], 3),
        "best": {"jax": best_jax, "torch": best_torch, "ratio": round(sps[best_jax] / sps[best_torch], 3)},
        "model_flops_per_step": flops_step,
        "mfu_vs_f32_peak": {name: round(flops_step * v / peak, 3) for name, v in sps.items()},
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
    peak = matmul_peak(1024)  # float32
    result = {"jax": jax.__version__, "torch": torch.__version__, "cpu_count": CORES,
              "omp_wait_policy": omp_wait_policy(), "matmul_peak_gflops": round(peak / 1e9, 1), "sizes": {}}
    for name, overrides in SIZES.items():
        result["sizes"][name] = bench(overrides, args.steps, args.rounds, peak)
    result["load_avg_1m"] = load.record()
    emit(result, args.out)


if __name__ == "__main__":
    main()
