"""Optax optimizers and schedules from `OptimConfig`."""

from __future__ import annotations

import re

import jax
import optax

from aigc_jax.core.config import ExperimentConfig, OptimConfig
from aigc_jax.core.errors import UserError
from aigc_jax.core.lora import is_adapter
from aigc_jax.core.paths import param_path, param_paths


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then constant, or cosine or linear decay to ``final_lr`` at
    update ``total_steps`` (the linear decay is WGAN-GP's CIFAR-10 schedule, Gulrajani et al. 2017).

    The warm-up gives update ``t`` (from 0) the rate ``lr * (t + 1) / (warmup_steps + 1)``, as nanoGPT does, so the
    first update is not wasted on a zero learning rate.
    """
    start = cfg.lr / (cfg.warmup_steps + 1)
    decay = max(total_steps, cfg.warmup_steps + 1)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=start if cfg.warmup_steps else cfg.lr,
            peak_value=cfg.lr,
            warmup_steps=cfg.warmup_steps,
            decay_steps=decay,
            end_value=cfg.final_lr,
        )
    if cfg.schedule == "constant":
        after = optax.constant_schedule(cfg.lr)
    else:
        after = optax.linear_schedule(cfg.lr, cfg.final_lr, decay - cfg.warmup_steps)
    if not cfg.warmup_steps:
        return after
    return optax.join_schedules([optax.linear_schedule(start, cfg.lr, cfg.warmup_steps), after], [cfg.warmup_steps])


def freeze_labels(player: str, pattern: str, lora: bool = False):
    """``params -> labels``: "frozen" or "train" per leaf. Frozen: paths that fully match ``pattern``, and with
    ``lora``, every parameter but the adapters of a player that has adapters (`aigc_jax.core.lora`). A pattern
    that matches no parameter is a UserError (a typo would otherwise freeze nothing, silently)."""
    regex = re.compile(pattern) if pattern else None

    def labels(params):
        paths = param_paths({player: params})
        adapted = lora and any(is_adapter(p) for p in paths)
        if regex is not None and not any(regex.fullmatch(p) for p in paths):
            raise UserError(f"players.{player}.optim.freeze={pattern!r} matches no parameter of {player!r} "
                            f"(paths look like {next(iter(paths))!r})")

        def label(path, _):
            name = param_path(player, path)
            frozen = (adapted and not is_adapter(name)) or (regex is not None and regex.fullmatch(name))
            return "frozen" if frozen else "train"

        return jax.tree_util.tree_map_with_path(label, params)

    return labels


def trainable_counts(config: ExperimentConfig, params: dict) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``params`` (``{player: pytree}``, arrays or shapes) under the
    config's freezing and LoRA."""
    trainable = total = 0
    for p in config.players:
        sub = params[p.name]
        labels = (freeze_labels(p.name, p.optim.freeze, bool(config.train.lora))(sub)
                  if p.optim.freeze or config.train.lora else jax.tree.map(lambda _: "train", sub))
        for leaf, label in zip(jax.tree.leaves(sub), jax.tree.leaves(labels), strict=True):
            total += int(leaf.size)
            trainable += int(leaf.size) if label == "train" else 0
    return trainable, total


def make_optimizer(cfg: OptimConfig, total_steps: int, player: str = "", lora: bool = False,
                   lr_scale: bool = False) -> optax.GradientTransformation:
    """Global-norm clipping (when ``clip_norm > 0``) chained with Adam or AdamW under the schedule.

    ``lr_scale``: a final ``optax.scale`` by a factor held in the optimizer state (``optax.inject_hyperparams``,
    1 at init; `set_lr_scale`), so that the members of one vmapped population can run at different learning rates.
    Scaling the whole update scales AdamW's decoupled weight decay with it, exactly as a larger rate would.

    AdamW decays only matrices and embeddings (arrays of rank >= 2), not biases or norm scales, as GPT-2 and
    nanoGPT do. With ``accumulate_steps = k`` (optax.MultiSteps) the schedule counts applied updates, so
    ``total_steps`` is divided by k.
    """
    k = cfg.accumulate_steps
    sched = make_schedule(cfg, max(total_steps // k, 1))
    if cfg.name == "adamw":
        opt = optax.adamw(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                          mask=lambda params: jax.tree.map(lambda x: x.ndim >= 2, params))
    else:
        opt = optax.adam(sched, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    if cfg.clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
    if lr_scale:
        opt = optax.chain(opt, optax.inject_hyperparams(optax.scale)(step_size=1.0))
    if cfg.freeze or lora:  # frozen leaves: zero updates and no state (clipping sees the trainable ones only)
        opt = optax.multi_transform({"train": opt, "frozen": optax.set_to_zero()},
                                    freeze_labels(player, cfg.freeze, lora))
    if k > 1:
        opt = optax.MultiSteps(opt, every_k_schedule=k)
    return opt


def make_optimizers(config: ExperimentConfig) -> dict[str, optax.GradientTransformation]:
    """Every player's optimizer, by name. A player's schedule counts its own updates: one that makes
    ``updates_per_step`` updates per train step (an n_critic critic) makes ``steps * updates_per_step`` in all."""
    scaled = bool(config.train.population_lr_scale)
    return {p.name: make_optimizer(p.optim, config.train.steps * p.updates_per_step, p.name, bool(config.train.lora),
                                   scaled) for p in config.players}


def set_lr_scale(opt_state, scale):
    """``opt_state`` (of an optimizer made with ``lr_scale=True``) with its learning-rate factor set to ``scale``."""
    return optax.tree_utils.tree_set(opt_state, step_size=scale)
