"""The Python API: list, create, train and load models by name or run directory."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from aigc_jax.checkpoint import Checkpointer
from aigc_jax.core import config as cfglib
from aigc_jax.core import registry
from aigc_jax.core.config import ExperimentConfig
from aigc_jax.core.contract import sampling_params
from aigc_jax.core.errors import UserError


def list_models() -> list[dict]:
    """One row per registered experiment: name, family, dataset and parameter count (from shapes only)."""
    rows = []
    for name in registry.list_experiments():
        cfg = registry.get_config(name)
        entry = registry.model_entry(cfg.model_name)
        model = registry.build_model(cfg)
        shapes = jax.eval_shape(model.init, jax.random.key(0))[0]
        count = sum(int(x.size) for x in jax.tree.leaves(shapes))
        rows.append({"name": name, "family": entry.family, "model": entry.name, "dataset": cfg.data.name,
                     "params": count})
    return rows


def get_config(name: str, overrides: tuple[str, ...] | list[str] = (), variant: str = "") -> ExperimentConfig:
    """An experiment's config with ``key=value`` overrides applied (and validated)."""
    return cfglib.apply_overrides(registry.get_config(name, variant), list(overrides))


def config_from_dict(data: dict) -> ExperimentConfig:
    try:
        entry = registry.model_entry(data["model_name"])
        return cfglib.from_dict(ExperimentConfig, data, model_config_cls=entry.config_cls)
    except (KeyError, TypeError) as e:
        raise UserError(f"config.json is not an aigc-jax experiment config ({e})") from None


def read_run_config(workdir: str | Path) -> ExperimentConfig:
    """The resolved config of a run directory (from config.json)."""
    wd = Path(workdir)
    path = wd / "config.json"
    if not wd.is_dir():
        raise UserError(f"run directory {workdir} does not exist")
    if not path.is_file():
        raise UserError(f"{workdir} is not a run directory (no config.json); train one with `aigc-jax train`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    return config_from_dict(data)


def restore_run(workdir: str | Path, mesh=None, step: int | None = None):
    """``(setup, state, step)`` of a run's latest (or given) checkpoint, on ``mesh`` (default: all devices)."""
    from aigc_jax.train.setup import build_setup

    cfg = read_run_config(workdir)
    if mesh is None:
        cfg = dataclasses.replace(cfg, mesh="")
    ck_dir = Path(workdir) / "checkpoints"
    if not ck_dir.is_dir():
        raise UserError(f"{workdir} has no checkpoints yet")
    ckpt = Checkpointer(ck_dir, read_only=True)
    try:
        latest = ckpt.latest_step() if step is None else step
        if latest is None:
            raise UserError(f"{workdir} has no checkpoints yet")
        if latest not in ckpt.all_steps():
            raise UserError(f"{workdir} has no checkpoint at step {latest} (it has {ckpt.all_steps()})")
        setup = build_setup(cfg, mesh, for_training=False)
        _, state = ckpt.restore(setup.abstract_state, None, latest)
    finally:
        ckpt.close()
    return setup, state, latest


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A trained model as plain data and pure functions.

    ``params`` is a plain pytree (nested dicts of arrays), the params the sampler uses (for a GAN, the moving
    average of its generator and that generator's normalisation statistics); ``sample_fn(params, key, num,
    **cond)`` returns images ``[num, H, W, C]`` in [0, 1]. Family extras (e.g. ``encode``/``decode``/``log_prob``
    for VAEs) are in ``extras`` and also reachable as attributes. All are pure: ``jax.jit`` (``num`` static),
    ``jax.vmap`` over keys and ``jax.grad`` apply to them directly.
    """

    config: ExperimentConfig
    params: Any
    step: int
    sample_fn: Callable
    extras: dict

    def __getattr__(self, name):
        extras = object.__getattribute__(self, "extras")
        if name in extras:
            return extras[name]
        raise AttributeError(name)


def load(workdir: str | Path, step: int | None = None) -> LoadedModel:
    """Load a run directory's latest (or given) checkpoint for use in your own JAX code."""
    setup, state, at = restore_run(workdir, step=step)
    model = setup.model
    # The params the sampler takes: the trained ones, or a GAN's moving-average generator (see sampling_params).
    params = jax.device_get(sampling_params(model, state["params"], state["model_state"]))
    extras = model.extras() if hasattr(model, "extras") else {}
    return LoadedModel(config=setup.config, params=params, step=at, sample_fn=model.sample, extras=extras)


def create(name: str, overrides: tuple[str, ...] | list[str] = ()):
    """The model object of an experiment (its pure functions), without training."""
    return registry.build_model(get_config(name, overrides))
