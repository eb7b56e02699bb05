"""Fault drill: interrupt a training run at random moments (SIGTERM and SIGKILL mixed), resume it each time, and
check that the final params equal an uninterrupted run's bitwise and that metrics.jsonl has every step once.

Each interruption launches ``aigc-jax train`` on the same workdir and sends a signal after a random delay drawn
from [0.5 s, start-up + 1/N of the training time] (both measured first; N interruptions), so the signals land
in start-up, in a step or in a checkpoint write, and the run is still unfinished after the last one; then it is
run to the end.
SIGTERM must end in exit status 143 with the step checkpointed (or 0 when the run ended first); SIGKILL loses at
most the work since the last checkpoint (a time-based interval, ``train.checkpoint_every_secs``, bounds it). One
JSON object on stdout:

    python benchmarks/faults.py --interruptions 20 --out benchmarks/results/faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._report import emit  # noqa: E402

STEPS = 3000
SETTINGS = [ "--set", "model.hidden=32", "--set", "model.latent_dim=4",
            "--set", "data.batch_size=32", "--set", "data.eval_batch_size=500", "--set", "train.num_eval_batches=2",
            "--set", "train.log_every=1", "--set", "train.checkpoint_every=10", "--set",
            "train.checkpoint_every_secs=0.5", "--set", "train.keep_checkpoints=2", "--set", "train.eval_every=0",
            "--set", "train.sample_every=0", "--no-progress"]


def _train(workdir: Path, sig: int | None = None, delay: float = 0.0, steps: int = STEPS) -> tuple[int, str, float]:
    cmd = [sys.executable, "-m", "aigc_jax.cli", "train", "vae-mnist", "--workdir", str(workdir), "--steps",
           str(steps), *SETTINGS]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if sig is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, err.strip(), time.perf_counter() - t0


def _final_params(workdir: Path):
    import jax

    from aigc_jax.api import restore_run

    _, state, step = restore_run(workdir)
    return step, jax.device_get(state["params"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interruptions", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="aigc-jax-faults-"))
    try:
        rc, err, duration = _train(root / "straight")
        if rc != 0:
            raise SystemExit(f"the uninterrupted run failed (exit {rc}): {err}")
        _, _, start_up = _train(root / "one-step", steps=1)
        # Each attempt trains at most 1/interruptions of the run: it is still unfinished after the last one.
        window = start_up + max(duration - start_up, 0.0) / args.interruptions
        wd = root / "drilled"
        drills = []
        for i in range(args.interruptions):
            sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
            delay = rng.uniform(0.5, window)
            rc, err, _ = _train(wd, sig, delay)
            # SIGTERM: 143 with the step checkpointed, or 0 when the run had finished; -15 (the default action)
            # only while Python is still importing the package, before the CLI's handler exists (nothing done).
            expected = {signal.SIGTERM: (0, 143, -15), signal.SIGKILL: (0, -9)}[sig]
            lines = err.splitlines()
            drills.append({"signal": signal.Signals(sig).name, "delay_s": round(delay, 2), "exit": rc,
                           "stderr": lines[-1] if lines else "", "before_the_handler": rc == -15,
                           "survived": rc in expected and not any("Traceback" in line for line in lines)
                           and (rc != -15 or not err)})
            print(f"[{i + 1}/{args.interruptions}] {drills[-1]}", file=sys.stderr)
        progress = _final_params(wd)[0] if (wd / "checkpoints").is_dir() else 0
        rc, err, _ = _train(wd)  # finish the run
        import numpy as np

        s_step, s_params = _final_params(root / "straight")
        d_step, d_params = _final_params(wd)
        import jax

        equal = s_step == d_step == STEPS and all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s_params), jax.tree.leaves(d_params), strict=True))
        records = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
        train_steps = [r["step"] for r in records if r["kind"] == "train"]
        result = {
            "benchmark": "faults",
            "experiment": "vae-mnist (hidden 32, latent 4, batch 32), checkpoints every 10 steps and every 0.5 s",
            "steps": STEPS,
            "interruptions": args.interruptions,
            "survived": sum(d["survived"] for d in drills),
            "sigterm": sum(d["signal"] == "SIGTERM" for d in drills),
            "sigkill": sum(d["signal"] == "SIGKILL" for d in drills),
            "sigterm_before_the_cli_handler": sum(d["before_the_handler"] for d in drills),
            "final_exit": rc,
            "final_params_bitwise_equal": bool(equal),
            "metrics_records_each_step_once": train_steps == list(range(1, STEPS + 1)),
            "duplicate_records": len(train_steps) - len(set(train_steps)),
            "missing_records": len(set(range(1, STEPS + 1)) - set(train_steps)),
            "step_reached_by_the_interrupted_attempts": progress,
            "uninterrupted_run_s": round(duration, 1),
            "start_up_s": round(start_up, 1),
            "drills": drills,
            "command": f"python benchmarks/faults.py --interruptions {args.interruptions} --seed {args.seed}",
        }
        emit(result, args.out)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
