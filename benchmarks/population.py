"""Population throughput: K members in one compiled program (``train.population=K``, vmapped or looped with
``lax.map``) against K single runs one after the other, in one process (the step compiled once) and as K separate
``aigc-jax train`` commands (start-up and compile each time), for an MLP VAE, the `-cpu` GPT and DCGAN.

In-process figures are member-steps per second of the train step alone (paced as the trainer paces it, after one
warm-up step; best of ``--rounds``); the separate commands are timed whole, for ``--steps`` steps each, as a user
would run them (evaluation, sampling and checkpoints at the end included).

    python -m benchmarks.population --out benchmarks/results/population_cpu.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from benchmarks._report import LoadAverage, emit

EXPERIMENTS = ("vae-mnist", "gpt-shakespeare-char-cpu", "dcgan-mnist")


def member_steps_per_second(name: str, k: int, mode: str, steps: int, rounds: int) -> dict:
    import jax

    from aigc_jax.api import get_config
    from aigc_jax.data import sources
    from aigc_jax.data.pipeline import train_iterator
    from aigc_jax.parallel import mesh as meshlib
    from aigc_jax.train.setup import build_setup
    from benchmarks._report import paced_steps

    cfg = get_config(name, [f"train.population={k}", f"train.population_mode={mode}"])
    setup = build_setup(cfg)
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    batches = [meshlib.to_global(next(it), setup.batch_sharding) for _ in range(steps)]
    state = setup.init_state(0)
    t0 = time.perf_counter()
    state, _ = paced_steps(setup.train_step, state, batches[:1])
    compile_s = time.perf_counter() - t0
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        state, _ = paced_steps(setup.train_step, state, batches)
        best = min(best, time.perf_counter() - t0)
    jax.clear_caches()
    return {"steps_per_s": steps / best, "member_steps_per_s": k * steps / best, "first_step_s": compile_s}


def separate_commands(name: str, k: int, steps: int) -> float:
    """Seconds for K ``aigc-jax train`` commands of ``steps`` steps, one after the other."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(k):
            cmd = [sys.executable, "-m", "aigc_jax.cli", "train", name, "--workdir", f"{tmp}/run{i}", "--steps",
                   str(steps), "--set", f"train.seed={i}", "--no-progress"]
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per round (in process)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--members", default="1,4,8")
    ap.add_argument("--command-members", type=int, default=4, help="K for the separate-commands timing (0: skip)")
    ap.add_argument("--command-steps", type=int, default=100)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    from aigc_jax.train.aot import quiet_libtpu_if_no_tpu

    quiet_libtpu_if_no_tpu()
    load = LoadAverage()
    members = [int(k) for k in args.members.split(",")]
    results = {}
    for name in EXPERIMENTS:
        if args.only and name != args.only:
            continue
        single = member_steps_per_second(name, 1, "vmap", args.steps, args.rounds)
        rows = {"single": single}
        for k in members:
            if k == 1:
                continue
            for mode in ("vmap", "loop"):
                r = member_steps_per_second(name, k, mode, args.steps, args.rounds)
                r["vs_sequential"] = r["member_steps_per_s"] / single["member_steps_per_s"]
                rows[f"K={k} {mode}"] = r
                print(f"{name} K={k} {mode}: {r['vs_sequential']:.2f}x K sequential runs", flush=True)
        if args.command_members:
            k = args.command_members
            seconds = separate_commands(name, k, args.command_steps)
            rows[f"{k} separate commands"] = {"seconds": seconds, "steps_each": args.command_steps,
                                              "member_steps_per_s": k * args.command_steps / seconds}
        results[name] = rows
    emit({"benchmark": "population", "results": results, "load_average": load.record(),
          "command": "python -m benchmarks.population --out benchmarks/results/population_cpu.json"}, args.out)


if __name__ == "__main__":
    main()
