"""Training throughput of every registered experiment, and the trainer against a bare jit loop and PyTorch.

    python benchmarks/train_throughput.py [--steps 300] [--experiments vae-mnist,...] [--only vae,dcgan,experiments]
                                          [--out FILE.json]

Prints one JSON object:
- ``experiments``: per experiment (default config, default devices), compile time of the train step, steps/s and
  examples/s of the jitted step fed by the Grain pipeline.
- ``vae_mnist_side_by_side`` (same machine, same run, same model/batch/optimizer): the full trainer (`train()` with
  logging, TensorBoard, async Orbax checkpoints, progress bar off), a bare hand-written `jax.jit` loop, and the
  PyTorch twin in `benchmarks/torch_vae.py` (skipped with a note when torch is not installed:
  `pip install -e '.[bench]'`), alternating in every round (medians). Ratios are trainer/bare and jax/torch. The
  trainer's run also reports its test -ELBO as a quality check (band: it must fall from ~540 nats at init to
  below 130 within the timed steps). The twin runs in a process of its own each round.
- ``dcgan_mnist_side_by_side`` (batch 64, Adam 2e-4 (0.5, 0.999), non-saturating loss, EMA generator): the full
  trainer on `dcgan-mnist` (as above), a bare hand-written `jax.jit` step (D update, G update, EMA; no NaN guard)
  and the PyTorch eager twin in `benchmarks/torch_dcgan.py` (same layer shapes; parameter counts asserted equal).
  The three alternate within each round (medians over rounds); ratios trainer/bare and jax/torch. Also the jitted
  train step of `wgan-gp-mnist` (its n_critic critic updates with the gradient penalty + 1 generator update),
  JAX only.
  The 1-minute load average before and after is recorded: on a shared machine it explains outliers.

Our side runs the configuration ``aigc-jax train`` picks on this host (`aigc_jax.train.host`'s precision: bfloat16
for the MLP VAE where the CPU has native bfloat16, float32 for the DCGAN; ``--no-fast-defaults``: the experiments'
float32; ``--set KEY=VALUE``: an override for the VAE); the bare loop runs the same model and, like the trainer,
traces its gradient inside `reverse_mode_kernels`, so that the trainer/bare ratio measures the trainer alone. The
PyTorch twins stay float32 eager, as their users run them.

``--only`` picks parts (default all): ``vae`` and ``dcgan`` (the side-by-sides), ``experiments`` (every experiment).
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

from _report import LoadAverage, emit, omp_wait_policy, paced_steps  # noqa: E402

from aigc_jax.api import get_config  # noqa: E402
from aigc_jax.core.registry import list_experiments  # noqa: E402
from aigc_jax.data import sources  # noqa: E402
from aigc_jax.data.pipeline import train_iterator  # noqa: E402
from aigc_jax.nn import reverse_mode_kernels  # noqa: E402
from aigc_jax.parallel import mesh as meshlib  # noqa: E402
from aigc_jax.train import host  # noqa: E402
from aigc_jax.train.loop import train  # noqa: E402
from aigc_jax.train.optim import make_optimizers  # noqa: E402
from aigc_jax.train.setup import build_setup  # noqa: E402


def _timed(fn, n, warmup=20):
    fn(warmup)
    t = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t)


FAST = {"on": True}  # main() turns it off with --no-fast-defaults
VAE_OVERRIDES: list[str] = []  # main()'s --set, for the VAE side-by-side


def _config(name: str, extra: tuple[str, ...] = ()):
    """``name``'s config as ``aigc-jax train`` runs it here (the fast defaults' precision unless turned off)."""
    cfg = get_config(name, list(extra))
    return get_config(name, [*extra, *host.bf16_override(cfg)]) if FAST["on"] else cfg


def bench_experiment(name: str, steps: int, warmup: int = 20) -> dict:
    cfg = _config(name)
    setup = build_setup(cfg)
    it = train_iterator(sources.for_experiment(cfg, "train"), cfg.data, setup.examples_per_step)
    state = setup.init_state(0)
    batch = meshlib.to_global(next(it), setup.batch_sharding)
    t0 = time.perf_counter()
    compiled = setup.train_step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run(n):
        global_batches = (meshlib.to_global(next(it), setup.batch_sharding) for _ in range(n))
        holder["state"], _ = paced_steps(compiled, holder["state"], global_batches)

    sps = _timed(run, steps, warmup)
    return {"compile_s": round(compile_s, 3), "steps_per_sec": round(sps, 2),
            "examples_per_sec": round(sps * setup.examples_per_step, 1), "batch": setup.examples_per_step,
            "devices": jax.device_count(), "compute_dtype": cfg.model.declared_compute_dtype or "float32"}


def _run_trainer(name: str, steps: int, workdir: Path, extra: tuple[str, ...] = ()) -> tuple[dict, float, float]:
    """The whole `train()` loop: Grain input, metrics.jsonl + TensorBoard every 50 steps, async checkpoints.
    Returns the summary, the median steps/s of the logging windows after the first (which holds the compile)
    and the wall time."""
    cfg = _config(name, (*extra, f"train.steps={steps}", "train.log_every=50", "train.eval_every=0",
                         "train.sample_every=0", f"train.checkpoint_every={max(steps // 3, 1)}",
                         "train.num_eval_batches=4"))
    # The trainer's schedule spans these `steps` (the bare loop and the torch twin keep the full run's): the
    # arithmetic per step is the same, but its reported loss is not comparable with theirs.
    t = time.perf_counter()
    summary = train(cfg, workdir, progress=False)
    wall = time.perf_counter() - t
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_sec"] for r in rows if r["kind"] == "train"][1:]  # the first window holds the compile
    return summary, float(np.median(rates)), wall


def bench_trainer(steps: int, workdir: Path) -> dict:
    summary, sps, wall = _run_trainer("vae-mnist", steps, workdir, tuple(VAE_OVERRIDES))
    return {"steps_per_sec": round(sps, 2), "wall_s": round(wall, 2),
            "test_neg_elbo": round(summary["eval"]["neg_elbo"], 2)}


def make_bare():
    """A hand-written loop: numpy permutation batches, jax.jit step with the same loss and Adam + cosine.
    Returns ``run(steps) -> steps/s`` (compiled on first use)."""
    cfg = _config("vae-mnist", tuple(VAE_OVERRIDES))
    setup = build_setup(cfg)
    model = setup.model
    opt = make_optimizers(cfg)["vae"]
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

        with reverse_mode_kernels():  # the model's hand-written VJPs, as in the trainer's step
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


def make_torch():
    """The PyTorch twin, each call in a fresh process (`benchmarks/torch_vae.py`'s ``main``: 50 warm-up steps, then
    the timed ones, on the same batches as the bare loop); ``None`` without torch. In this process, after the JAX
    runs, the same twin ran up to 2x slower than alone (51-60 against 105 steps/s), so it gets a process of its own.
    Returns ``(run(steps) -> steps/s, info)``."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("torch") is None:
        return None
    script = str(Path(__file__).resolve().parent / "torch_vae.py")
    info = {}

    def run(n):
        out = subprocess.run([sys.executable, script, "--steps", str(n)], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        info.update(torch=res["torch"], threads=res["threads"], omp_wait_policy=omp_wait_policy(),
                    process="its own, one per round")
        return res["steps_per_sec"]

    return run, info


# -- DCGAN -------------------------------------------------------------------------------------------------------
GAN_BATCH = 64


def _mnist_batches(batch: int):
    """``next_batch() -> uint8 [batch, 28, 28, 1]``: MNIST train in one fixed random order, cycling."""
    images = sources.load_mnist("train").images
    perm = np.random.default_rng(0).permutation(len(images))
    nb = len(images) // batch
    holder = {"i": 0}

    def next_batch():
        j = holder["i"] % nb
        holder["i"] += 1
        return images[perm[j * batch:(j + 1) * batch]]

    return next_batch


def bench_gan_trainer(steps: int, workdir: Path) -> dict:
    summary, sps, wall = _run_trainer("dcgan-mnist", steps, workdir)
    tr, ev = summary["train"], summary["eval"]
    # Quality check: both players still train (finite losses, D neither collapsed nor dominating completely).
    return {"steps_per_sec": round(sps, 2), "wall_s": round(wall, 2),
            "last_window": {k: round(tr[k], 3) for k in ("discriminator/loss", "generator/loss") if k in tr},
            "test_d_real": round(ev["d_real"], 3), "test_d_fake": round(ev["d_fake"], 3)}


def make_bare_gan():
    """A hand-written loop for `dcgan-mnist`: numpy permutation batches; one jax.jit step doing the discriminator
    update, the generator update (which also measures the EMA generator's running statistics) and the EMA of the
    generator's weights, with the model's own losses and the experiment's Adam; donated params/optimizer/model
    state, keys derived inside the jit, no NaN guard. Returns ``(run(steps) -> steps/s, param counts)``."""
    cfg = _config("dcgan-mnist")
    model = build_setup(cfg).model
    opts = make_optimizers(cfg)
    params, mstate = model.init(jax.random.key(0))
    counts = {k: sum(int(x.size) for x in jax.tree.leaves(v)) for k, v in params.items()}
    opt_states = {k: opts[k].init(params[k]) for k in params}
    base_key = jax.random.key(0)

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def step(params, opt_states, mstate, x, i):
        batch = {"image": x.astype(jnp.float32) / 255.0}
        keys = jax.random.split(jax.random.fold_in(base_key, i))
        losses = []
        for player, key in zip(("discriminator", "generator"), keys, strict=True):
            def f(p, player=player, key=key, params=params, mstate=mstate):
                return model.loss(player, {**params, player: p}, mstate, batch, key)

            (loss, (_, mstate)), g = jax.value_and_grad(f, has_aux=True)(params[player])
            u, o = opts[player].update(g, opt_states[player], params[player])
            params = {**params, player: optax.apply_updates(params[player], u)}
            opt_states = {**opt_states, player: o}
            mstate = model.after_update(player, params, mstate)
            losses.append(loss)
        return params, opt_states, mstate, jnp.stack(losses)

    next_batch = _mnist_batches(GAN_BATCH)
    holder = {"p": params, "o": opt_states, "m": mstate, "i": 0}

    def run(n):
        p, o, m = holder["p"], holder["o"], holder["m"]
        for _ in range(n):
            p, o, m, _ = step(p, o, m, next_batch(), np.int32(holder["i"]))
            holder["i"] += 1
        jax.block_until_ready(p)
        holder["p"], holder["o"], holder["m"] = p, o, m

    run(20)  # compile
    return (lambda steps: _timed(run, steps, warmup=0)), counts


def make_torch_gan():
    """The PyTorch twin on the same batches (torch threads as in the VAE comparison); ``None`` without torch.
    Returns ``(run(steps) -> steps/s, info)``."""
    try:
        from torch_dcgan import make_twin as make_gan_twin

        m = get_config("dcgan-mnist").model  # the twin's layers follow the experiment's default shapes
        step, torch, counts = make_gan_twin(image_shape=tuple(m.image_shape), latent_dim=m.latent_dim,
                                            g_channels=tuple(m.g_channels), d_channels=tuple(m.d_channels),
                                            g_hidden=tuple(m.g_hidden), d_hidden=tuple(m.d_hidden),
                                            ema_decay=m.ema_decay, threads=os.cpu_count())
    except ImportError:
        return None
    next_batch = _mnist_batches(GAN_BATCH)

    def run(n):
        loss = None
        for _ in range(n):
            loss = step(next_batch())
        if loss is not None:
            float(loss.detach())  # wait for the last step

    run(20)  # warm-up (oneDNN primitive caches, allocator)
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": counts,
            "omp_wait_policy": omp_wait_policy()}
    return (lambda steps: _timed(run, steps, warmup=0)), info


def _side_by_side(run_trainer, bare_run, twin, rounds: int, bare_steps: int, torch_steps: int, **described) -> dict:
    """The trainer (``run_trainer(workdir) -> its result``), the bare loop and the torch twin (``None``: skipped)
    alternate in every round so that machine noise hits all alike; medians over the rounds, and their ratios."""
    load = LoadAverage()
    trainer_runs, bare_runs, torch_runs = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            trainer_runs.append(run_trainer(Path(tmp) / "run"))
        bare_runs.append(round(bare_run(bare_steps), 2))
        if twin is not None:
            torch_runs.append(round(twin[0](torch_steps), 2))
    trainer = dict(trainer_runs[-1])
    trainer["steps_per_sec"] = float(np.median([t["steps_per_sec"] for t in trainer_runs]))
    trainer["steps_per_sec_rounds"] = [t["steps_per_sec"] for t in trainer_runs]
    bare = float(np.median(bare_runs))
    side = {**described, "trainer": trainer, "bare_jit_steps_per_sec": round(bare, 2), "bare_jit_rounds": bare_runs,
            "trainer_over_bare": round(trainer["steps_per_sec"] / bare, 3)}
    if twin is None:
        side["torch"] = {"skipped": "torch not installed (pip install -e '.[bench]')"}
    else:
        t = float(np.median(torch_runs))
        side["torch"] = {"steps_per_sec": round(t, 2), "rounds": torch_runs, **twin[1]}
        side["jax_trainer_over_torch"] = round(trainer["steps_per_sec"] / t, 3)
        side["jax_bare_over_torch"] = round(bare / t, 3)
    side["load_avg_1m"] = load.record()
    return side


def bench_gan_side_by_side(trainer_steps: int, bare_steps: int, torch_steps: int, rounds: int) -> dict:
    bare_run, jax_counts = make_bare_gan()
    twin = make_torch_gan()
    if twin is not None:
        assert twin[1]["params"] == jax_counts, (twin[1]["params"], jax_counts)
    return _side_by_side(
        lambda wd: bench_gan_trainer(trainer_steps, wd), bare_run, twin, rounds, bare_steps, torch_steps,
        batch=GAN_BATCH, params=jax_counts,
        model="DCGAN 28x28 (dcgan-mnist): G linear 1024-BN-ReLU, linear-BN-ReLU + 2x (3x3 conv, pixel shuffle); "
              "D 2x (4x4/2 conv), linear 1024-BN-LReLU, linear; Adam 2e-4 (0.5, 0.999), non-saturating loss, D on "
              "real and fake separately, EMA of G",
        step="1 D update + 1 G update + EMA (with the EMA generator's BN statistics)")


def bench_vae_side_by_side(args) -> dict:
    # As many torch steps per round as the trainer's.
    return _side_by_side(lambda wd: bench_trainer(args.trainer_steps, wd), make_bare(), make_torch(), args.rounds,
                         args.trainer_steps, args.trainer_steps, batch=128,
                         model="MLP VAE 784-500-500-50, Adam + cosine, dynamic binarization",
                         compute_dtype=_config("vae-mnist", tuple(VAE_OVERRIDES)).model.compute_dtype)


PARTS = ("vae", "dcgan", "experiments")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--trainer-steps", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--experiments", default="")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts among {PARTS}")
    ap.add_argument("--gan-trainer-steps", type=int, default=500, help="train() steps per round (dcgan)")
    ap.add_argument("--gan-steps", type=int, default=200, help="timed steps per round of the bare jit and torch")
    ap.add_argument("--wgan-steps", type=int, default=10, help="timed steps of the wgan-gp-mnist jitted step")
    ap.add_argument("--no-fast-defaults", action="store_true",
                    help="the experiments' own precision instead of the one aigc-jax train picks on this host")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for the VAE side-by-side (e.g. model.compute_dtype=bfloat16)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    FAST["on"] = not args.no_fast_defaults
    VAE_OVERRIDES.extend(args.set)
    parts = [p for p in args.only.split(",") if p]
    if unknown := set(parts) - set(PARTS):
        ap.error(f"--only: unknown part(s) {sorted(unknown)}; expected among {PARTS}")
    names = [n for n in args.experiments.split(",") if n] or list_experiments()
    result = {"jax": jax.__version__, "backend": jax.default_backend(), "cpu_count": os.cpu_count(),
              "fast_defaults": FAST["on"]}
    if "vae" in parts:
        result["vae_mnist_side_by_side"] = bench_vae_side_by_side(args)
    if "dcgan" in parts:
        result["dcgan_mnist_side_by_side"] = bench_gan_side_by_side(args.gan_trainer_steps, args.gan_steps,
                                                                    args.gan_steps, args.rounds)
        # Few steps: with n_critic > 1 the critic updates run in a lax.scan, far slower than unrolled under XLA:CPU.
        result["wgan_gp_mnist_jit_step"] = bench_experiment("wgan-gp-mnist", args.wgan_steps, warmup=2)
    if "experiments" in parts:
        # Per-experiment numbers last: their live iterators and states must not weigh on the side-by-sides.
        result["experiments"] = {n: bench_experiment(n, args.steps) for n in names}
    emit(result, args.out)

if __name__ == "__main__":
    main()
