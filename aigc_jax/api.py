"""The Python API: list, create, train, load, sample and evaluate models by name or run directory.

The CLI is flags over these functions; each raises `UserError` (one clear line) for anything a user can get wrong.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from aigc_jax.checkpoint import Checkpointer
from aigc_jax.core import config as cfglib
from aigc_jax.core import registry
from aigc_jax.core.config import ExperimentConfig
from aigc_jax.core.contract import Extras, ImageToImage, ModelSpec, sampling_params
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
        cfg = cfglib.from_dict(ExperimentConfig, data, model_config_cls=entry.config_cls)
    except (KeyError, TypeError) as e:
        raise UserError(f"config.json is not an aigc-jax experiment config ({e})") from None
    except UserError as e:
        raise UserError(f"config.json: {e}") from None
    try:
        cfglib.validate(cfg)
    except UserError as e:
        raise UserError(f"config.json: {e}") from None
    return cfg


def read_run_config(workdir: str | Path) -> ExperimentConfig:
    """The resolved config of a run directory (from config.json)."""
    wd = Path(workdir)
    path = wd / "config.json"
    if wd.exists() and not wd.is_dir():
        raise UserError(f"{workdir} is a file, not a run directory")
    if not wd.is_dir():
        raise UserError(f"run directory {workdir} does not exist")
    if not path.is_file():
        raise UserError(f"{workdir} is not a run directory (no config.json); train one with `aigc-jax train`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None
    return config_from_dict(data)


def run_model(workdir: str | Path):
    """``(config, model)`` of a run directory, without restoring its checkpoint (the model's declaration)."""
    cfg = read_run_config(workdir)
    return cfg, registry.build_model(cfg)


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
        # The latest: the newest good one (a damaged one is reported, and skipped); a given step: that one.
        latest, state = ckpt.restore(setup.abstract_state, None, step)
    finally:
        ckpt.close()
    return setup, state, latest


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A trained model as plain data and pure functions.

    ``params`` is a plain pytree (nested dicts of arrays), the params the sampler uses (for a GAN, the moving
    average of its generator and that generator's normalisation statistics); ``sample_fn(params, key, num,
    **cond)`` returns images ``[num, H, W, C]`` in [0, 1] or token ids, with the conditions of ``spec.conditions``
    (validated). Family extras (e.g. ``encode``/``decode``/``log_prob``
    for VAEs) are in ``extras`` and also reachable as attributes. All are pure: ``jax.jit`` (``num`` static),
    ``jax.vmap`` over keys and ``jax.grad`` apply to them directly.
    """

    config: ExperimentConfig
    params: Any
    step: int
    sample_fn: Callable
    extras: dict
    spec: ModelSpec  # the model's declaration: output shape, the conditions sample_fn accepts, its metrics

    def __getattr__(self, name):
        extras = object.__getattribute__(self, "extras")
        if name in extras:
            return extras[name]
        raise AttributeError(name)


def load(workdir: str | Path, step: int | None = None, weights: str | None = None,
         member: int | None = None) -> LoadedModel:
    """Load a run directory's latest (or given) checkpoint for use in your own JAX code. ``weights``: "raw" (the
    trained params) or "ema" (the trainer's moving averages, for a run that keeps them); default the run's
    ``train.sample_weights``. ``member``: which member of a population (``--population K``) to load."""
    from aigc_jax.train.step import averaged_state

    setup, state, at = restore_run(workdir, step=step)
    state, setup = _member(setup, state, member, workdir)
    model = setup.model
    if weights not in (None, "raw", "ema"):
        raise UserError(f"weights={weights!r}: expected 'raw' or 'ema'")
    if weights == "ema" and "ema" not in state:
        raise UserError(f"{workdir} keeps no moving average (train it with players.NAME.ema_decay > 0)")
    state = setup.sampling_state(state) if weights is None else averaged_state(state) if weights == "ema" else state
    # The params the sampler takes: the trained ones, or a GAN's moving-average generator (see sampling_params).
    params = jax.device_get(sampling_params(model, state["params"], state["model_state"]))
    extras = model.extras() if isinstance(model, Extras) else {}
    return LoadedModel(config=setup.config, params=params, step=at, sample_fn=model.sample, extras=extras,
                       spec=model.spec)


def _member(setup, state, member, workdir):
    """``(state, setup)`` of one member: of a population, member ``member`` (required); of a single run, itself
    (``member`` None or 0)."""
    if setup.population == 1:
        if member not in (None, 0):
            raise UserError(f"member={member!r}: {workdir} is a single run, not a population")
        return state, setup
    if member is None or isinstance(member, bool) or not isinstance(member, int):
        raise UserError(f"{workdir} is a population of {setup.population}: pick member=0..{setup.population - 1}")
    return setup.member_state(state, member), setup.member


def create(name: str, overrides: tuple[str, ...] | list[str] = ()):
    """The model object of an experiment (its pure functions), without training."""
    return registry.build_model(get_config(name, overrides))


def train(config: ExperimentConfig | str, workdir: str | Path | None = None, *, overrides=(), progress: bool = True,
          mesh=None) -> dict:
    """Train (or resume) an experiment in ``workdir`` (default ``runs/NAME``): ``config`` is an
    `ExperimentConfig` (from `get_config`) or an experiment name with ``key=value`` ``overrides``. Returns a summary
    with the last train and eval metrics."""
    from aigc_jax.train.loop import train as train_loop

    cfg = get_config(config, overrides) if isinstance(config, str) else cfglib.apply_overrides(config, overrides)
    return train_loop(cfg, Path(workdir) if workdir is not None else Path("runs") / cfg.name, progress=progress,
                      mesh=mesh)


def sample(workdir: str | Path, num: int, *, seed: int = 0, step: int | None = None, member: int | None = None,
           **conditions):
    """``num`` samples of a trained run as a numpy array: images ``[num, H, W, C]`` in [0, 1], or token ids
    ``[num, P + T]``. ``conditions`` are those the model declares (``label=3``; ``prompt=ids, tokens=200,
    temperature=0.8``; ``input=images`` for image-to-image models), validated; the same samples as
    ``load(workdir).sample_fn(params, jax.random.key(seed), num, **conditions)``."""
    from aigc_jax.train.sampling import draw

    setup, state, _ = restore_run(workdir, step=step)
    state, setup = _member(setup, state, 0 if member is None and setup.population > 1 else member, workdir)
    return draw(setup, setup.sampling_state(state), num, seed, conditions)


def read_tokenizer(workdir: str | Path):
    """The tokenizer a text run was trained with (``tokenizer.json`` in the run directory)."""
    from aigc_jax.data.text import tokenizer_from_json

    path = Path(workdir) / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{workdir} has no tokenizer.json (a text run writes it when training starts)")
    try:
        return tokenizer_from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not a tokenizer file ({e})") from None


def sample_text(workdir: str | Path, num: int = 1, *, prompt: str | None = None, seed: int = 0,
                step: int | None = None, **settings) -> list[str]:
    """``num`` decoded texts from a token model: ``prompt`` (default: a newline) and its continuation.
    ``settings``: ``tokens``, ``temperature``, ``top_k``, ``top_p`` (the model's defaults when not given)."""
    from aigc_jax.data.text import default_prompt
    from aigc_jax.train.sampling import draw

    setup, state, _ = restore_run(workdir, step=step)
    if setup.model.spec.output != "tokens":
        raise UserError(f"{setup.config.name} makes images, not text: use aigc_jax.sample")
    tokenizer = read_tokenizer(workdir)
    if prompt == "":
        raise UserError("prompt must not be empty")
    ids = default_prompt(tokenizer) if prompt is None else tokenizer.encode(prompt)
    tokens = draw(setup, setup.sampling_state(state), num, seed, {"prompt": ids, **settings})
    return [tokenizer.decode(row) for row in tokens]


def evaluate(workdir: str | Path, metrics=None, *, num_samples: int | None = None, seed: int | None = None,
             step: int | None = None, importance_samples: int = 0, extractor: str = "",
             inception_weights: str | None = None, progress: bool = True, ensemble: bool = False,
             settings: dict | None = None) -> dict:
    """The metrics a trained run's model declares (``metrics``: a subset of ``model.spec.metrics``, default its
    ``default_metrics``) on the test split, as a flat dict: ``test_*`` from its own test metrics, NLL and bits/dim
    from its likelihood, FID/KID/IS/precision-recall/label accuracy from samples. ``num_samples``: test examples
    (loss, nll) or generated samples (sample metrics, default 10,000); ``seed`` defaults to the run's train seed.
    A population reports each member, the mean, the standard deviation and a 95% interval; ``ensemble`` adds the
    members' mixture: its likelihood (``nll``) and its samples (the sample metrics). ``settings``: the sampler
    settings of the sample metrics (``{"steps": 20, "sampler": "heun", "guidance": 2.0}`` for a diffusion
    model), recorded with the declared defaults of the rest as ``sample_settings``."""
    from aigc_jax.metrics.sample_quality import default_extractor
    from aigc_jax.train.evaluation import evaluate_state

    setup, state, at = restore_run(workdir, step=step)
    options = {"weights": inception_weights} if inception_weights else None
    if inception_weights and (extractor or default_extractor(setup.model.spec.image_shape)) != "inception-v3":
        raise UserError("inception weights are for the inception-v3 extractor (choose it with extractor="
                        "'inception-v3')")
    kwargs = dict(num_samples=num_samples, seed=seed, importance_samples=importance_samples, extractor=extractor,
                  extractor_options=options, progress=progress, settings=settings or {})
    if setup.population > 1 or ensemble:
        from aigc_jax.train.evaluation import evaluate_population

        return evaluate_population(setup, state, at, metrics, ensemble=ensemble, **kwargs)
    return evaluate_state(setup, state, at, metrics, **kwargs)


def translate_images(workdir: str | Path, images, *, seed: int = 0, step: int | None = None):
    """An image-to-image run's outputs ``[N, H, W, C]`` for user images float ``[N, h, w, c]`` in [0, 1] (turned
    into the model's inputs by its ``input_from_images``), and those inputs."""
    from aigc_jax.train.sampling import draw

    setup, state, _ = restore_run(workdir, step=step)
    model = setup.model
    if not isinstance(model, ImageToImage):
        raise UserError(f"{setup.config.name} samples from noise; it does not translate images")
    cond = model.spec.condition("image")
    x = np.asarray(model.input_from_images(images))
    return draw(setup, setup.sampling_state(state), len(x), seed, {cond.name: x}), x
