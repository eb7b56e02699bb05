"""The one training loop, shared by every model family.

``train(config, workdir)`` creates or resumes a run directory (see DESIGN.md "A run directory"), steps the jitted
train step, and on the way writes metrics, TensorBoard events, sample grids and Orbax checkpoints. It never imports
a model family: everything model-specific comes through the contract in `aigc_jax.core.contract`.
"""

from __future__ import annotations

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
from aigc_jax.core.contract import sampling_params
from aigc_jax.core.errors import NonFiniteLossError, UserError
from aigc_jax.data import sources
from aigc_jax.data import text as text_data
from aigc_jax.data.pipeline import EVAL_KEY, masked_sums, train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.setup import Setup, build_setup
from aigc_jax.train.writers import RunWriter, save_grid, save_panels, save_text

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


def evaluate(setup: Setup, state, split: str = "test", max_batches: int | None = None, seed: int = 0,
             max_examples: int = 0) -> dict:
    """Mean of the model's per-example eval metrics over a split's first ``max_examples`` (0: all; and at most
    ``max_batches`` batches, default ``train.num_eval_batches``), with the count under ``"examples"``.
    Deterministic: fixed keys per batch, and a fixed data transform per example (see `eval_batches`)."""
    cfg = setup.config
    nb = cfg.train.num_eval_batches if max_batches is None else max_batches
    totals, count = masked_sums(lambda b, m, k: setup.eval_step(state, b, m, k), sources.for_experiment(cfg, split),
                                cfg.data.eval_batch_size, setup.batch_sharding, jax.random.key(seed + EVAL_KEY),
                                nb, max_examples)
    return {**{k: float(v) / count for k, v in totals.items()}, "examples": int(count)}


def sample_images(setup: Setup, state: dict, num: int, seed: int, cond: dict | None = None) -> np.ndarray:
    """``num`` samples from the model with ``cond`` (default: its grid conditioning, e.g. labels 0..9 repeating),
    drawn with the model's sampling params (e.g. a GAN's moving-average generator)."""
    cond = setup.model.sample_conditions(num) if cond is None else cond
    params = sampling_params(setup.model, state["params"], state["model_state"])
    # A replicated result: every process can read it, also when the params span hosts.
    fn = jax.jit(lambda p, k, c: setup.model.sample(p, k, num, **c), out_shardings=meshlib.replicated(setup.mesh))
    return np.asarray(jax.device_get(fn(params, jax.random.key(seed), cond)))


def panel_images(setup: Setup, state: dict, num: int, seed: int, split: str = "test") -> np.ndarray:
    """For an image-to-image model, one with ``grid_images(params, state, batch, key) -> [B, K, H, W, C]``: the K
    panels (e.g. input | output | target) of each of the first ``num`` examples of a split, as ``[num, K, H, W, C]``
    in [0, 1]. Its samples need inputs, so its grids are made from data rather than from `sample_conditions`."""
    src = sources.for_experiment(setup.config, split)
    batch = src.__getitems__(np.arange(min(num, len(src))))

    def fn(params, model_state, b, key):
        data_key, model_key = jax.random.split(key)
        return setup.model.grid_images(params, model_state, setup.transform(b, data_key), model_key)

    out = jax.jit(fn, out_shardings=meshlib.replicated(setup.mesh))(state["params"], state["model_state"], batch,
                                                                     jax.random.key(seed))
    return np.asarray(jax.device_get(out))


def _write_json(path: Path, data: dict) -> None:
    save_text(json.dumps(data, indent=2) + "\n", path)


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
    train_src = sources.for_experiment(cfg, "train")
    model_shape = getattr(cfg.model, "image_shape", None)
    data_shape = getattr(train_src, "image_shape", None)
    if model_shape is not None and data_shape is None:
        raise UserError(f"dataset {cfg.data.name!r} has no images but model {cfg.model_name!r} needs them")
    if model_shape is not None and tuple(data_shape) != tuple(model_shape):
        raise UserError(
            f"dataset {cfg.data.name!r} has images of shape {tuple(data_shape)} but model.image_shape is "
            f"{tuple(model_shape)}: set model.image_shape to match"
        )
    tokenizer = getattr(train_src, "tokenizer", None)
    vocab = getattr(cfg.model, "vocab_size", None)
    if tokenizer is not None and vocab is not None and tokenizer.vocab_size > vocab:
        raise UserError(
            f"the {cfg.data.tokenizer} tokenizer of {cfg.data.name!r} has {tokenizer.vocab_size} tokens but "
            f"model.vocab_size is {vocab}: set model.vocab_size >= {tokenizer.vocab_size}"
        )
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

    def check_finite():
        bad = int(jax.device_get(state["nonfinite_step"]))
        if bad >= 0:
            raise NonFiniteLossError(bad + 1)  # steps are counted from 1, as in metrics.jsonl

    def checkpoint(step: int, eval_loss: float | None = None):
        check_finite()  # never save a state from after a non-finite update
        ckpt.save(step, state, iterator, cfg_dict, eval_loss)

    def run_eval(step: int) -> dict:
        m = evaluate(setup, state, seed=cfg.train.seed)
        writer.write("eval", step, m)
        summary["eval"] = m
        return m

    def run_samples(step: int):
        # Every process draws the samples (params may be sharded across hosts); the first one writes them.
        seed, path = cfg.train.seed + 1, workdir / "samples" / f"step_{step}.png"
        if getattr(setup.model, "sample_kind", "image") == "text":
            if tokenizer is None:
                return
            toks = sample_images(setup, state, min(cfg.train.num_samples, 4), seed,
                                 {"prompt": text_data.default_prompt(tokenizer)})
            write = lambda: save_text("\n\n---\n\n".join(tokenizer.decode(t) for t in toks), path.with_suffix(".txt"))
        elif hasattr(setup.model, "grid_images"):  # image-to-image: input | output | target of test examples
            panels = panel_images(setup, state, cfg.train.num_samples, seed)
            write = lambda: save_panels(panels, path)
        else:
            images = sample_images(setup, state, cfg.train.num_samples, seed)
            write = lambda: save_grid(images, path)
        if primary:
            write()

    bar = tqdm(total=total, initial=start, desc=cfg.name, unit="step", disable=not (progress and primary),
               dynamic_ncols=True, smoothing=0.05)
    pending: list[dict] = []
    in_flight = meshlib.InFlight()
    t_log, steps_since = time.perf_counter(), 0
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
            state, metrics = setup.train_step(state, meshlib.to_global(batch, setup.batch_sharding))
            in_flight.push(metrics)
            step += 1
            steps_since += 1
            pending.append(metrics)
            bar.update(1)
            last = step == total or step == stop_at
            if step % cfg.train.log_every == 0 or last:
                host = jax.device_get(pending)
                mean = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                now = time.perf_counter()
                mean["steps_per_sec"] = steps_since / max(now - t_log, 1e-9)
                t_log, steps_since, pending = now, 0, []
                check_finite()
                writer.write("train", step, mean)
                summary["train"] = mean
                # "loss" for one player; "d_loss", "g_loss", ... (first letter of each player) for several.
                shown = {("loss" if k == "loss" else f"{k.split('/')[0][0]}_loss"): f"{v:.3f}" for k, v in mean.items()
                         if k.split("/")[-1] == "loss"}
                bar.set_postfix(shown, refresh=False)
            eval_loss = None
            if (cfg.train.eval_every and step % cfg.train.eval_every == 0) or last:
                eval_loss = run_eval(step).get("loss")
            if (cfg.train.sample_every and step % cfg.train.sample_every == 0) or last:
                run_samples(step)
            if step % cfg.train.checkpoint_every == 0 or last:
                checkpoint(step, eval_loss)
            if step == stop_at:
                break
            if interrupted:
                if ckpt.latest_step() != step:  # nothing lost: keep what was trained so far (when finite)
                    checkpoint(step)
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
