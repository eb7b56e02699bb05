"""Models and experiments by name.

A model family registers ``name -> (config class, builder)`` with `register_model`; the builder takes the model
config and returns an object meeting `GenerativeModel`. Experiments are the files ``experiments/*.py``: each has
``get_config(variant="")`` returning an `ExperimentConfig`; ``vae_mnist.py`` is the experiment ``vae-mnist``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aigc_jax.core.config import ExperimentConfig, ModelConfig
from aigc_jax.core.contract import REQUIRED
from aigc_jax.core.errors import UserError


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    config_cls: type[ModelConfig]
    build: Callable[[Any], Any]


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, family: str, config_cls: type[ModelConfig]):
    """Decorator registering a model builder under ``name``."""

    def deco(build):
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = ModelEntry(name, family, config_cls, build)
        return build

    return deco


def _load_families() -> None:
    import aigc_jax.models  # noqa: F401  (registers every family)


def model_entry(name: str) -> ModelEntry:
    _load_families()
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}: registered models are {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def build_model(config: ExperimentConfig):
    """Build the model of an experiment and check it meets the contract."""
    entry = model_entry(config.model_name)
    if not isinstance(config.model, entry.config_cls):
        raise TypeError(f"model {entry.name!r} needs a {entry.config_cls.__name__}, got {type(config.model).__name__}")
    model = entry.build(config.model)
    missing = [m for m in REQUIRED if not callable(getattr(model, m, None))]
    if missing or not getattr(model, "players", None):
        raise TypeError(f"model {entry.name!r} does not meet the contract: missing {missing or ['players']}")
    declared = tuple(p.name for p in config.players)
    if set(declared) != set(model.players):
        raise UserError(
            f"experiment {config.name!r} configures players {declared} but model {entry.name!r} has {model.players}"
        )
    return model


# ----------------------------------------------------------------------------------------------------------------
# Experiments.


def _experiment_modules() -> dict[str, str]:
    import experiments

    out = {}
    for info in pkgutil.iter_modules(experiments.__path__):
        if not info.name.startswith("_"):
            out[info.name.replace("_", "-")] = f"experiments.{info.name}"
    return out


def list_experiments() -> list[str]:
    return sorted(_experiment_modules())


def experiment_module(name: str):
    mods = _experiment_modules()
    if name not in mods:
        raise UserError(f"unknown experiment {name!r}: expected one of {', '.join(sorted(mods))}")
    return importlib.import_module(mods[name])


def get_config(name: str, variant: str = "") -> ExperimentConfig:
    """The config of experiment ``name`` (``variant='tiny'`` gives the small one the tests use)."""
    mod = experiment_module(name)
    try:
        return mod.get_config(variant)
    except KeyError:
        raise UserError(f"experiment {name!r} has no variant {variant!r}") from None
