"""The one training loop, shared by every model family.

``train(config, workdir)`` creates or resumes a run directory (see DESIGN.md "A run directory"), steps the jitted
train step, and on the way writes metrics, TensorBoard events, sample grids and Orbax checkpoints. It never imports
a model family: everything model-specific comes through the contract in `aigc_jax.core.contract`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from aigc_jax.checkpoint import Checkpointer
from aigc_jax.core import config as cfglib
from aigc_jax.core.config import ExperimentConfig
from aigc_jax.core.errors import NonFiniteLossError, UserError
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.evaluation import evaluate
from aigc_jax.train.sampling import sample_grid
from aigc_jax.train.setup import Setup, build_setup
from aigc_jax.train.writers import RunWriter, save_text

# Config sections that define the state's structure or the data stream: a workdir can only be resumed with the
# same ones, except for the settings below, which change neither (e.g. a lower learning rate after a divergence).
_STRUCTURAL = ("model_name", "model", "data", "players")
_FREE_ON_RESUME = ("data.eval_batch_size", "data.read_threads",
                   *(f"players.*.optim.{k}" for k in ("lr", "schedule", "warmup_steps", "final_lr", "b1", "b2", "eps",
                                                     "weight_decay")))


def _check_resumable(stored: dict, config: ExperimentConfig, workdir: Path) -> None:
    current = cfglib.to_dict(config)
    diffs = []

    def walk(a, b, prefix):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):  # players by name
                walk(x, y, f"{prefix}.{x.get('name', i) if isinstance(x, dict) else i}")
        elif a != b and not any(fnmatch.fnmatchcase(prefix, pattern) for pattern in _FREE_ON_RESUME):
            diffs.append(prefix)

    for key in _STRUCTURAL:
        walk(stored.get(key), current.get(key), key)
    if diffs:
        raise UserError(
            f"{workdir} holds a checkpoint of a different configuration (differs in {', '.join(diffs[:5])}); "
            "resume it with the same settings or train into another --workdir"
        )


def _write_json(path: Path, data: dict) -> None:
    save_text(json.dumps(data, indent=2) + "\n", path)


# ----------------------------------------------------------------------------------------------------------------
# Hooks: what the loop does after a step. Each runs every ``every`` steps (0: never) and at the last step, in the
# order of `_hooks`; a later feature adds a hook, not a branch in the loop.


@dataclasses.dataclass
class Run:
    """What the hooks share: the setup, the live state (replaced after every step), the run's writers."""

    setup: Setup
    state: dict
    workdir: Path
    writer: RunWriter
    ckpt: Checkpointer
    iterator: object
    cfg_dict: dict
    summary: dict
    primary: bool
    tokenizer: object = None
    pending: list = dataclasses.field(default_factory=list)
    eval_loss: float | None = None  # the eval loss of this step, when the eval hook ran (the best checkpoint)

    def check_finite(self):
        bad = int(jax.device_get(self.state["nonfinite_step"]))
        if bad >= 0:
            raise NonFiniteLossError(bad + 1)  # steps are counted from 1, as in metrics.jsonl

    def checkpoint(self, step: int):
        self.check_finite()  # never save a state from after a non-finite update
        self.ckpt.save(step, self.state, self.iterator, self.cfg_dict, self.eval_loss)


@dataclasses.dataclass
class Hook:
    every: int

    def due(self, step: int, last: bool) -> bool:
        return last or bool(self.every and step % self.every == 0)

    def __call__(self, run: Run, step: int) -> None:  # pragma: no cover  (abstract)
        raise NotImplementedError


class LogHook(Hook):
    """Mean of the train metrics since the last log, steps/s, the NaN check, metrics.jsonl and the bar's losses."""

    def __init__(self, every: int, bar):
        super().__init__(every)
        self.bar = bar
        self.t_log = time.perf_counter()

    def __call__(self, run: Run, step: int) -> None:
        host = jax.device_get(run.pending)
        mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        now = time.perf_counter()
        mean["steps_per_sec"] = len(host) / max(now - self.t_log, 1e-9)
        self.t_log, run.pending = now, []
        run.check_finite()
        run.writer.write("train", step, mean)
        run.summary["train"] = mean
        # "loss" for one player; "d_loss", "g_loss", ... (first letter of each player) for several.
        shown = {("loss" if k == "loss" else f"{k.split('/')[0][0]}_loss"): f"{v:.3f}" for k, v in mean.items()
                 if k.split("/")[-1] == "loss"}
        self.bar.set_postfix(shown, refresh=False)


class EvalHook(Hook):
    """The model's test metrics (`train.num_eval_batches` batches) into metrics.jsonl and the summary."""

    def __call__(self, run: Run, step: int) -> None:
        m = evaluate(run.setup, run.state, seed=run.setup.config.train.seed)
        run.writer.write("eval", step, m)
        run.summary["eval"] = m
        run.eval_loss = m.get("loss")


class SampleHook(Hook):
    """``samples/step_N.png`` (or ``.txt``): the sample kind the model declares (`sampling.sample_grid`)."""

    def __call__(self, run: Run, step: int) -> None:
        cfg = run.setup.config
        write = sample_grid(run.setup, run.state, cfg.train.num_samples, cfg.train.seed + 1,
                            run.workdir / "samples" / f"step_{step}.png", run.tokenizer)
        if run.primary:
            write()


class CheckpointHook(Hook):
    def __call__(self, run: Run, step: int) -> None:
        run.checkpoint(step)


def _hooks(cfg: ExperimentConfig, bar) -> list[Hook]:
    t = cfg.train
    return [LogHook(t.log_every, bar), EvalHook(t.eval_every), SampleHook(t.sample_every),
            CheckpointHook(t.checkpoint_every)]


def _check_data(cfg: ExperimentConfig, spec, train_src) -> None:
    """The dataset gives what the model declares it reads: images of its shape, or tokens of its vocabulary."""
    if spec.output == "image":
        data_shape = getattr(train_src, "image_shape", None)
        if data_shape is None:
            raise UserError(f"dataset {cfg.data.name!r} has no images but model {cfg.model_name!r} needs them")
        if tuple(data_shape) != spec.image_shape:
            raise UserError(
                f"dataset {cfg.data.name!r} has images of shape {tuple(data_shape)} but model.image_shape is "
                f"{spec.image_shape}: set model.image_shape to match"
            )
    tokenizer = getattr(train_src, "tokenizer", None)
    if tokenizer is not None and tokenizer.vocab_size > spec.vocab_size:
        raise UserError(
            f"the {cfg.data.tokenizer} tokenizer of {cfg.data.name!r} has {tokenizer.vocab_size} tokens but "
            f"model.vocab_size is {spec.vocab_size}: set model.vocab_size >= {tokenizer.vocab_size}"
        )


def train(
    config: ExperimentConfig,
    workdir: str | os.PathLike,
    *,
    progress: bool = True,
    mesh=None,
    async_checkpoints: bool = True,
    stop_at: int | None = None,
) -> dict:
    """Train (or resume) ``config`` in ``workdir``; returns a summary with the last train and eval metrics.

    ``stop_at`` ends the process-local loop early at that step (after checkpointing it), as if interrupted; a
    later call resumes from there. It exists for resume tests and pre-emption drills.
    """
    workdir = Path(workdir)
    cfg = config
    primary = jax.process_index() == 0
    setup = build_setup(cfg, mesh)
    total = cfg.train.steps
    train_src = sources.for_experiment(cfg, "train", setup.model.spec)
    _check_data(cfg, setup.model.spec, train_src)
    tokenizer = getattr(train_src, "tokenizer", None)
    iterator = train_iterator(train_src, cfg.data, setup.examples_per_step)

    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints, async_save=async_checkpoints)
    cfg_dict = cfglib.to_dict(cfg)
    start = ckpt.latest_step()
    if start is not None:
        try:
            _check_resumable(ckpt.read_config(start), cfg, workdir)
            saved_tok = workdir / "tokenizer.json"
            if (tokenizer is not None and saved_tok.is_file()
                    and json.loads(saved_tok.read_text()) != tokenizer.to_json()):
                raise UserError(f"{cfg.data.name!r} no longer gives the tokenizer this run was trained with "
                                f"({saved_tok}): the text changed; restore it or train into another --workdir")
        except UserError:
            ckpt.close()
            raise
        _, state = ckpt.restore(setup.abstract_state, iterator, start)
    else:
        start = 0
        state = setup.init_state(cfg.train.seed)
    if primary:
        _write_json(workdir / "config.json", cfg_dict)
        if tokenizer is not None:
            _write_json(workdir / "tokenizer.json", tokenizer.to_json())
    summary: dict = {"workdir": str(workdir), "start_step": start}
    if start >= total:
        ckpt.close()
        summary.update(step=start, message=f"already trained to step {start} (train.steps={total})")
        return summary

    writer = RunWriter(workdir, enabled=primary, resume_step=start)
    bar = tqdm(total=total, initial=start, desc=cfg.name, unit="step", disable=not (progress and primary),
               dynamic_ncols=True, smoothing=0.05)
    run = Run(setup=setup, state=state, workdir=workdir, writer=writer, ckpt=ckpt, iterator=iterator,
              cfg_dict=cfg_dict, summary=summary, primary=primary, tokenizer=tokenizer)
    hooks = _hooks(cfg, bar)
    in_flight = meshlib.InFlight()
    step = start
    # Ctrl-C only raises a flag: the loop checkpoints at the end of the step it is in. (A KeyboardInterrupt raised
    # mid-step could find the state donated to the step and the data iterator one batch ahead of it.)
    interrupted: list[bool] = []

    def on_sigint(signum, frame):
        if interrupted:  # a second Ctrl-C stops at once, without a checkpoint
            raise KeyboardInterrupt
        interrupted.append(True)
        tqdm.write("interrupted: checkpointing at the end of this step (Ctrl-C again to stop at once)")

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        while step < total:
            batch = next(iterator)
            run.state, metrics = setup.train_step(run.state, meshlib.to_global(batch, setup.batch_sharding))
            in_flight.push(metrics)
            step += 1
            run.pending.append(metrics)
            bar.update(1)
            last = step == total or step == stop_at
            run.eval_loss = None
            for hook in hooks:
                if hook.due(step, last):
                    hook(run, step)
            if step == stop_at:
                break
            if interrupted:
                if ckpt.latest_step() != step:  # nothing lost: keep what was trained so far (when finite)
                    run.checkpoint(step)
                raise KeyboardInterrupt
    except BaseException:
        bar.close()
        ckpt.close()
        writer.close()
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
    bar.close()
    ckpt.close()
    writer.close()
    summary["step"] = step
    return summary
