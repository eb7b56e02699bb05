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
import shutil
import signal
import threading
import time
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from aigc_jax.checkpoint import Checkpointer
from aigc_jax.checkpoint.manager import CheckpointError
from aigc_jax.core import config as cfglib
from aigc_jax.core.config import ExperimentConfig
from aigc_jax.core.errors import Interrupted, NonFiniteLossError, UserError
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.evaluation import evaluate
from aigc_jax.train.optim import trainable_counts
from aigc_jax.train.sampling import sample_grid
from aigc_jax.train.setup import Setup, build_setup
from aigc_jax.train.step import averaged_state
from aigc_jax.train.writers import RunWriter, save_text

# Config sections that define the state's structure or the data stream: a workdir can only be resumed with the
# same ones, except for the settings below, which change neither (e.g. a lower learning rate after a divergence).
_STRUCTURAL = ("model_name", "model", "data", "players")
_FREE_ON_RESUME = ("data.eval_batch_size", "data.read_threads",
                   *(f"players.*.optim.{k}" for k in ("lr", "schedule", "warmup_steps", "final_lr", "b1", "b2", "eps",
                                                     "weight_decay")))


def _check_resumable(stored: dict, config: ExperimentConfig, workdir: Path) -> None:
    current = cfglib.to_dict(config)
    try:  # a config saved before a field existed has that field's default (the behaviour it was trained with)
        from aigc_jax.core.registry import model_entry

        entry = model_entry(stored["model_name"])
        stored = cfglib.to_dict(cfglib.from_dict(ExperimentConfig, stored, model_config_cls=entry.config_cls))
    except (KeyError, TypeError, UserError):
        pass  # compared as stored: the walk below names what differs
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
    # These change the state's structure or the model's function:
    for key in ("lora", "lora_alpha", "population", "population_lr_scale"):
        walk((stored.get("train") or {}).get(key), current["train"][key], f"train.{key}")
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
        bad = np.asarray(jax.device_get(self.state["nonfinite_step"])).reshape(-1)  # one per population member
        if (bad >= 0).any():
            first = int(bad[bad >= 0].min())
            raise NonFiniteLossError(first + 1)  # steps are counted from 1, as in metrics.jsonl

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
        setup, seed = run.setup, run.setup.config.train.seed
        members = []
        for i in range(setup.population):  # member i is evaluated as the single run with seed + i would be
            state = setup.member_state(run.state, i)
            m = evaluate(setup.member, state, seed=seed + i)
            if "ema" in state:  # the moving averages' metrics beside the raw weights'
                averaged = evaluate(setup.member, averaged_state(state), seed=seed + i)
                m.update({f"ema_{k}": v for k, v in averaged.items() if k != "examples"})
            members.append(m)
        m = members[0] if len(members) == 1 else {
            **{k: float(np.mean([x[k] for x in members])) for k in members[0]},
            **{f"member{i}/{k}": v for i, x in enumerate(members) for k, v in x.items() if k != "examples"}}
        run.writer.write("eval", step, m)
        run.summary["eval"] = m
        run.eval_loss = m.get("loss")


class SampleHook(Hook):
    """``samples/step_N.png`` (or ``.txt``): the sample kind the model declares (`sampling.sample_grid`)."""

    def __call__(self, run: Run, step: int) -> None:
        cfg = run.setup.config
        member = run.setup.member_state(run.state, 0)  # a population's grid shows member 0
        write = sample_grid(run.setup.member, run.setup.sampling_state(member),
                            cfg.train.num_samples, cfg.train.seed + 1,
                            run.workdir / "samples" / f"step_{step}.png", run.tokenizer)
        if run.primary:
            write()


class CheckpointHook(Hook):
    """Every ``every`` steps, and (``every_secs`` > 0) whenever that much wall time has passed since the last
    checkpoint. Processes agree on the time-based decision (process 0's clock decides), so a collective save
    never waits for a process that chose not to save."""

    def __init__(self, every: int, every_secs: float = 0.0):
        super().__init__(every)
        self.every_secs = every_secs
        self.t_last = time.monotonic()

    def due(self, step: int, last: bool) -> bool:
        if super().due(step, last):
            return True
        return bool(self.every_secs) and _agree(time.monotonic() - self.t_last >= self.every_secs)

    def __call__(self, run: Run, step: int) -> None:
        run.checkpoint(step)
        self.t_last = time.monotonic()


def _agree(flag: bool) -> bool:
    """``flag`` as process 0 sees it, on every process (a no-op in a single-process run)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _hooks(cfg: ExperimentConfig, bar) -> list[Hook]:
    t = cfg.train
    return [LogHook(t.log_every, bar), EvalHook(t.eval_every), SampleHook(t.sample_every),
            CheckpointHook(t.checkpoint_every, t.checkpoint_every_secs)]


class _StopSignals:
    """While training: the first SIGINT (Ctrl-C) or SIGTERM (a pre-emption notice) only raises a flag, and the loop
    checkpoints at the end of the step it is in (a KeyboardInterrupt raised mid-step could find the state donated
    to the step and the data iterator one batch ahead of it); a second one stops at once (KeyboardInterrupt).
    Installed before start-up, so a signal during compilation also ends in a true message."""

    SIGNALS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("received SIGTERM", 143)}

    def __init__(self):
        self.received: list[int] = []
        self.previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.received.append(signum)
        if len(self.received) > 1:
            raise KeyboardInterrupt
        what = self.SIGNALS[signum][0]
        tqdm.write(f"{what}: checkpointing at the end of this step (send it again to stop at once)")

    def stop(self) -> bool:
        return _agree(bool(self.received))

    def error(self, what_happened: str) -> Interrupted:
        """``Interrupted("<the signal> <what_happened>")`` with the signal's exit status (130 or 143)."""
        what, code = self.SIGNALS[self.received[0] if self.received else signal.SIGINT]
        return Interrupted(f"{what} {what_happened}", code)


_LOCK = ".lock"


def _claim_workdir(workdir: Path):
    """Refuse a path that is a file or a non-empty folder that is not a run, and take the run's lock (one writer
    per workdir: a second `train` fails at once with the holder's pid). Returns the open lock file (held until the
    process ends or it is closed)."""
    import fcntl

    if workdir.exists() and not workdir.is_dir():
        raise UserError(f"--workdir {workdir} is a file; give a directory (a new one, or a run to resume)")
    if workdir.is_dir():
        names = {p.name for p in workdir.iterdir()} - {_LOCK}
        is_run = (workdir / "checkpoints").is_dir() or _is_our_config(workdir / "config.json")
        if names and not is_run:
            raise UserError(f"--workdir {workdir} is not empty and is not an aigc-jax run (it holds "
                            f"{', '.join(sorted(names)[:3])}{', ...' if len(names) > 3 else ''}); give an empty or "
                            "new directory, so that none of its files is overwritten")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / _LOCK
    f = open(path, "a+")  # noqa: SIM115  (held open for the whole run)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UserError(f"{workdir} is being trained by another process (pid {holder}); wait for it to finish or "
                        "train into another --workdir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _is_our_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"model_name", "model", "train", "players"} <= set(data)


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
    primary = jax.process_index() == 0
    if workdir.exists() and not workdir.is_dir():  # before any work
        raise UserError(f"--workdir {workdir} is a file; give a directory (a new one, or a run to resume)")
    lock: list = []
    created = not workdir.exists()
    with _StopSignals() as signals:
        try:
            return _train(config, workdir, signals, primary, lock, progress=progress, mesh=mesh,
                          async_checkpoints=async_checkpoints, stop_at=stop_at)
        except BaseException:
            # A start that failed before the run was written (e.g. a bad --init-from) leaves no directory.
            if created and primary and not (workdir / "config.json").exists():
                for f in lock:
                    f.close()
                shutil.rmtree(workdir, ignore_errors=True)
            raise
        finally:
            for f in lock:
                f.close()


def _train(cfg, workdir: Path, signals: _StopSignals, primary: bool, lock: list, *, progress, mesh,
           async_checkpoints, stop_at) -> dict:
    setup = build_setup(cfg, mesh)
    total = cfg.train.steps
    train_src = sources.for_experiment(cfg, "train", setup.model.spec)
    _check_data(cfg, setup.model.spec, train_src)
    tokenizer = getattr(train_src, "tokenizer", None)
    iterator = train_iterator(train_src, cfg.data, setup.examples_per_step)
    if primary:  # after the checks that need no file, so that a mistake there leaves no directory behind
        lock.append(_claim_workdir(workdir))

    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints, async_save=async_checkpoints)
    cfg_dict = cfglib.to_dict(cfg)
    steps = ckpt.all_steps()
    if steps:
        try:
            stored = None
            for s in reversed(steps):  # every checkpoint of a run has the same structural config
                try:
                    stored = ckpt.read_config(s)
                    break
                except CheckpointError:
                    continue
            if stored is not None and "averaged" in stored:
                raise UserError(f"{workdir} holds an average of checkpoints of {stored['averaged']['run']} (aigc-jax "
                                "average): evaluate, sample or load it, or start a new run from it with --init-from")
            if stored is not None:
                _check_resumable(stored, cfg, workdir)
                if "init_from" in stored:  # a run started from another keeps the record of it
                    cfg_dict = {**cfg_dict, "init_from": stored["init_from"]}
            saved_tok = workdir / "tokenizer.json"
            if (tokenizer is not None and saved_tok.is_file()
                    and json.loads(saved_tok.read_text()) != tokenizer.to_json()):
                raise UserError(f"{cfg.data.name!r} no longer gives the tokenizer this run was trained with "
                                f"({saved_tok}): the text changed; restore it or train into another --workdir")
            start, state = ckpt.restore(setup.abstract_state, iterator)
        except UserError:
            ckpt.close()
            raise
    else:
        start = 0
        state = setup.init_state(cfg.train.seed)
        if cfg.train.init_from:
            from aigc_jax.train.init_from import initialise_from

            if setup.population > 1:
                ckpt.close()
                raise UserError("train.init_from with train.population > 1 is not supported yet: start the "
                                "members from scratch, or fine-tune single runs")
            try:
                state, record = initialise_from(setup, state, cfg.train.init_from)
            except UserError:
                ckpt.close()
                raise
            cfg_dict = {**cfg_dict, "init_from": record}
            tqdm.write(f"initialised from {record['run']} step {record['step']}: {record['restored']} arrays "
                       f"restored, {len(record['fresh'])} fresh, {len(record['dropped'])} dropped")
    if primary:
        _write_json(workdir / "config.json", cfg_dict)
        if tokenizer is not None:
            _write_json(workdir / "tokenizer.json", tokenizer.to_json())
    summary: dict = {"workdir": str(workdir), "start_step": start}
    if cfg.train.lora or any(p.optim.freeze for p in cfg.players):
        trainable, count = trainable_counts(cfg, setup.abstract_state["params"])
        summary["parameters"] = {"trainable": trainable, "total": count}
        lora = f"LoRA {cfg.train.lora} (alpha {cfg.train.lora_alpha:g}): " if cfg.train.lora else ""
        if primary:
            tqdm.write(f"{lora}{trainable:,} trainable of {count:,} parameters ({100 * trainable / count:.2f}%)")
    if start >= total:
        ckpt.close()
        summary.update(step=start, message=f"already trained to step {start} (train.steps={total})")
        return summary

    if signals.received:
        ckpt.close()
        raise signals.error("before the first step; nothing new was checkpointed"
                            + (f" (the run resumes from step {start})" if start else ""))
    writer = RunWriter(workdir, enabled=primary, resume_step=start)
    bar = tqdm(total=total, initial=start, desc=cfg.name, unit="step", disable=not (progress and primary),
               dynamic_ncols=True, smoothing=0.05)
    run = Run(setup=setup, state=state, workdir=workdir, writer=writer, ckpt=ckpt, iterator=iterator,
              cfg_dict=cfg_dict, summary=summary, primary=primary, tokenizer=tokenizer)
    hooks = _hooks(cfg, bar)
    in_flight = meshlib.InFlight()
    step = start
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
            if signals.stop():
                if ckpt.latest_step() != step:  # nothing lost: keep what was trained so far (when finite)
                    run.checkpoint(step)
                ckpt.wait()
                raise signals.error(f"at step {step}; checkpointed it: run the same command to resume")
    except KeyboardInterrupt:  # a second signal: stop at once
        bar.close()
        writer.close()
        try:
            ckpt.close()  # waits for a save in flight, so the latest step below is complete
        except BaseException:  # noqa: BLE001  (a save cut short is not a checkpoint; the next start cleans it)
            pass
        last = ckpt.latest_step()
        raise signals.error(f"twice: stopped at once after step {step}; "
                          + (f"the run resumes from its last checkpoint, step {last}" if last is not None
                            else "no checkpoint was written yet")) from None
    except BaseException:
        bar.close()
        ckpt.close()
        writer.close()
        raise
    bar.close()
    ckpt.close()
    writer.close()
    summary["step"] = step
    return summary
