"""Training throughput of every registered experiment, and the trainer against a bare jit loop and PyTorch.

    python benchmarks/train_throughput.py [--steps 300] [--experiments vae-mnist,...] [--out FILE.json]

Prints one JSON object:
- ``experiments``: per experiment (default config, default devices), compile time of the train step, steps/s and
  examples/s of the jitted step fed by the Grain pipeline.
- ``vae_mnist_side_by_side`` (same machine, same run, same model/batch/optimizer): the full trainer (`train()` with
  logging, TensorBoard, async Orbax checkpoints, progress bar off), a bare hand-written `jax.jit` loop, and the
  PyTorch twin in `benchmarks/torch_vae.py` (skipped with a note when torch is not installed:
  `pip install -e '.[bench]'`). Ratios are trainer/bare and jax/torch. The trainer's run also reports its test
  -ELBO as a quality check (band: it must fall from ~540 nats at init to below 130 within the timed steps).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402

from aigc_jax.api import get_config  # noqa: E402
from aigc_jax.core.registry import list_experiments  # noqa: E402
from aigc_jax.data import sources  # noqa: E402
from aigc_jax.data.pipeline import train_iterator  # noqa: E402
from aigc_jax.parallel import mesh as meshlib  # noqa: E402
from aigc_jax.train.loop import train  # noqa: E402
from aigc_jax.train.optim import make_optimizer  # noqa: E402
from aigc_jax.train.setup import build_setup  # noqa: E402


def _timed(fn, n, warmup=20):
    fn(warmup)
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


def bench_experiment(name: str, steps: int) -> dict:
    cfg = get_config(name)
    setup = build_setup(cfg)
    src = sources.get_source(cfg.data.name, "train", cfg.data.path)
    it = train_iterator(src, cfg.data, setup.examples_per_step)
    state = setup.init_state(0)
    batch = meshlib.to_global(next(it), setup.batch_sharding)
    t0 = time.perf_counter()
    compiled = setup.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run(n):
        s = holder["state"]
        for _ in range(n):
            s, _ = compiled(s, meshlib.to_global(next(it), setup.batch_sharding))
        jax.block_until_ready(s)
        holder["state"] = s

    sps = _timed(run, steps)
    return {"compile_s": round(compile_s, 3), "steps_per_sec": round(sps, 2),
            "examples_per_sec": round(sps * setup.examples_per_step, 1), "batch": setup.examples_per_step,
            "devices": jax.device_count()}


def bench_trainer(steps: int, workdir: Path) -> dict:
    """The whole `train()` loop: Grain input, metrics.jsonl + TensorBoard every 50 steps, async checkpoints."""
    cfg = get_config("vae-mnist", [f"train.steps={steps}", "train.log_every=50", "train.eval_every=0",
                                   "train.sample_every=0", f"train.checkpoint_every={max(steps // 3, 1)}",
                                   "train.num_eval_batches=4"])
    # Keep the cosine schedule of the full run so all three loops do the same arithmetic.
    t = time.perf_counter()
    summary = train(cfg, workdir, progress=False)
    wall = time.perf_counter() - t
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_sec"] for r in rows if r["kind"] == "train"][1:]  # the first window holds the compile
    return {"steps_per_sec": round(float(np.median(rates)), 2), "wall_s": round(wall, 2),
            "test_neg_elbo": round(summary["eval"]["neg_elbo"], 2)}


def make_bare():
    """A hand-written loop: numpy permutation batches, jax.jit step with the same loss and Adam + cosine.
    Returns ``run(steps) -> steps/s`` (compiled on first use)."""
    cfg = get_config("vae-mnist")
    setup = build_setup(cfg)
    model = setup.model
    opt = make_optimizer(cfg.player("vae").optim, cfg.train.steps)
    params, _ = model.init(jax.random.key(0))
    p, o = params["vae"], opt.init(params["vae"])

    base_key = jax.random.key(0)

    # Written the way a careful user would: donated params/optimizer state, the key derived inside the jit.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, o, x, i):
        key = jax.random.fold_in(base_key, i)

        def f(q):
            xb = jax.random.bernoulli(key, x.astype(jnp.float32) / 255.0).astype(jnp.float32)
            return model.loss("vae", {"vae": q}, {}, {"image": xb}, key)[0]

        loss, g = jax.value_and_grad(f)(p)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    images = sources.load_mnist("train").images
    perm = np.random.default_rng(0).permutation(len(images))
    holder = {"p": p, "o": o, "i": 0}

    def run(n):
        p, o = holder["p"], holder["o"]
        for _ in range(n):
            j = holder["i"] % (len(images) // 128)
            p, o, _ = step(p, o, images[perm[j * 128:(j + 1) * 128]], np.int32(holder["i"]))
            holder["i"] += 1
        jax.block_until_ready(p)
        holder["p"], holder["o"] = p, o

    run(20)  # compile
    return lambda steps: _timed(run, steps, warmup=0)


def bench_torch(steps: int) -> dict:
    try:
        from benchmarks.torch_vae import make_twin
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from torch_vae import make_twin
    try:
        step, torch = make_twin(threads=os.cpu_count())
    except ImportError:
        return {"skipped": "torch not installed (pip install -e '.[bench]')"}
    images = sources.load_mnist("train").images
    perm = np.random.default_rng(0).permutation(len(images))
    holder = {"i": 0}

    def run(n):
        for _ in range(n):
            j = holder["i"] % (len(images) // 128)
            loss = step(images[perm[j * 128:(j + 1) * 128]])
            holder["i"] += 1
        float(loss)

    return {"steps_per_sec": round(_timed(run, steps), 2), "torch": torch.__version__,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--trainer-steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--experiments", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    names = [n for n in args.experiments.split(",") if n] or list_experiments()
    result = {"jax": jax.__version__, "backend": jax.default_backend(), "cpu_count": os.cpu_count()}
    # The trainer and the bare loop alternate, three rounds, so that machine noise hits both alike; medians.
    bare_run = make_bare()
    trainer_runs, bare_runs = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            trainer_runs.append(bench_trainer(args.trainer_steps, Path(tmp) / "run"))
        bare_runs.append(round(bare_run(args.trainer_steps), 2))
    trainer = dict(trainer_runs[-1])
    trainer["steps_per_sec"] = float(np.median([t["steps_per_sec"] for t in trainer_runs]))
    trainer["steps_per_sec_rounds"] = [t["steps_per_sec"] for t in trainer_runs]
    bare = float(np.median(bare_runs))
    torch_res = bench_torch(args.steps)
    side = {"batch": 128, "model": "MLP VAE 784-500-500-50, Adam + cosine, dynamic binarization",
            "trainer": trainer, "bare_jit_steps_per_sec": round(bare, 2), "bare_jit_rounds": bare_runs,
            "trainer_over_bare": round(trainer["steps_per_sec"] / bare, 3), "torch": torch_res}
    if "steps_per_sec" in torch_res:
        side["jax_trainer_over_torch"] = round(trainer["steps_per_sec"] / torch_res["steps_per_sec"], 3)
        side["jax_bare_over_torch"] = round(bare / torch_res["steps_per_sec"], 3)
    result["vae_mnist_side_by_side"] = side
    # Per-experiment numbers last: their live iterators and states must not weigh on the side-by-side.
    result["experiments"] = {n: bench_experiment(n, args.steps) for n in names}
    emit(result, args.out)


if __name__ == "__main__":
    main()
