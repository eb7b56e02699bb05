"""Checkpoint averaging: the mean of a run's last K checkpoints, written as a new run directory
(``aigc-jax average RUN --last K --out RUN2``).

Averaging the weights of the last checkpoints of one run is the cheap cousin of a moving average (Izmailov et al.
2018, "Averaging Weights Leads to Wider Optima and Better Generalization"; Vaswani et al. 2017 average the last
5-20 checkpoints). Every floating-point array of the params, the model state (batch statistics, a GAN's average)
and the trainer's moving averages is the mean over the K checkpoints; everything else (step, keys, optimizer
state, counts) is the latest checkpoint's. The new run holds one checkpoint at the latest step and a config.json
that records the source and the steps; `aigc-jax eval`, `sample`, `aigc_jax.load` and ``--init-from`` take it
like any run. It does not train further (its optimizer state belongs to other weights).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from aigc_jax.checkpoint import Checkpointer
from aigc_jax.core import config as cfglib
from aigc_jax.core.errors import UserError

AVERAGED = "averaged"  # the config.json key of an averaged run's record


def _mean_of_floats(states: list[dict]) -> dict:
    def mean(*leaves):
        if not jnp.issubdtype(leaves[-1].dtype, jnp.floating):
            return leaves[-1]  # the latest
        total = leaves[0].astype(jnp.float32)
        for x in leaves[1:]:
            total = total + x.astype(jnp.float32)
        return (total / len(leaves)).astype(leaves[-1].dtype)

    latest = states[-1]
    out = dict(latest)
    for key in ("params", "model_state", "ema"):
        if key in latest:
            out[key] = jax.tree.map(mean, *(s[key] for s in states))
    return out


def average_run(run: str | Path, last: int, out: str | Path) -> dict:
    """Write the mean of ``run``'s last ``last`` checkpoints to the new run directory ``out``; returns its record.
    ``out`` must not exist (or be an empty directory): nothing of the user's is overwritten, and a failure leaves
    no partial directory."""
    from aigc_jax.api import read_run_config
    from aigc_jax.train.setup import build_setup

    run, out = Path(run), Path(out)
    cfg = read_run_config(run)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory; choose a new directory")
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise UserError(f"--last {last}: expected a positive number of checkpoints")
    ck_dir = run / "checkpoints"
    if not ck_dir.is_dir():
        raise UserError(f"{run} has no checkpoints yet")
    ckpt = Checkpointer(ck_dir, read_only=True)
    try:
        steps = ckpt.all_steps()
        if len(steps) < last:
            raise UserError(f"--last {last}: {run} has {len(steps)} checkpoint(s) (steps "
                            f"{', '.join(map(str, steps)) or 'none'}); keep more with train.keep_checkpoints")
        chosen = steps[-last:]
        stored = ckpt.read_config(chosen[-1])
        setup = build_setup(dataclasses.replace(cfg, mesh=""), for_training=False)
        states = [ckpt.restore(setup.abstract_state, None, s)[1] for s in chosen]
    finally:
        ckpt.close()
    state = _mean_of_floats(states)
    record = {"run": str(run.resolve()), "steps": chosen,
              "config_sha256": hashlib.sha256((run / "config.json").read_bytes()).hexdigest()}
    cfg_dict = {**cfglib.to_dict(cfg), **{k: v for k, v in stored.items() if k == "init_from"}, AVERAGED: record}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        writer = Checkpointer(tmp / "checkpoints", keep=1, async_save=False)
        try:
            writer.save(chosen[-1], state, None, cfg_dict)
        finally:
            writer.close()
        (tmp / "config.json").write_text(json.dumps(cfg_dict, indent=2) + "\n")
        if (run / "tokenizer.json").is_file():
            shutil.copyfile(run / "tokenizer.json", tmp / "tokenizer.json")
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record
