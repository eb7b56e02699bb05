"""Models and experiments by name.

A model family registers ``name -> (config class, model class)`` with `register_model`; the class is checked
against the contract (`aigc_jax.core.contract.check_model_class`) when it registers, and every built model's
declaration against its implementation (`check_model`). An experiment is a name and a ``get_config(variant="")``
returning an `ExperimentConfig`: `register_experiment` adds one, `register_experiment_package` adds every public
module of a package (``vae_mnist.py`` is the experiment ``vae-mnist``).

This module imports nothing above ``aigc_jax.core``. The package's composition root (`aigc_jax.zoo`) registers the
built-in families and experiments and adds, through `add_loader`, the plug-ins found as ``importlib.metadata``
entry points of the group `ENTRY_POINT_GROUP`; loaders run once, at the first look-up.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from aigc_jax.core.config import ExperimentConfig, ModelConfig
from aigc_jax.core.contract import GenerativeModel, check_model, check_model_class
from aigc_jax.core.errors import UserError

ENTRY_POINT_GROUP = "aigc_jax.models"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    config_cls: type[ModelConfig]
    model_cls: type[GenerativeModel]

    def build(self, config: ModelConfig) -> GenerativeModel:
        return self.model_cls(config)


_MODELS: dict[str, ModelEntry] = {}
_EXPERIMENTS: dict[str, Callable[[str], ExperimentConfig]] = {}
_LOADERS: list[Callable[[], None]] = []


def register_model(name: str, family: str, config_cls: type[ModelConfig], model_cls: type[GenerativeModel]) -> None:
    """Register ``model_cls`` (built as ``model_cls(config)`` from a ``config_cls``) under ``name``."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    if not (isinstance(config_cls, type) and issubclass(config_cls, ModelConfig)):
        raise TypeError(f"model {name!r}: {config_cls!r} is not a ModelConfig subclass")
    check_model_class(model_cls)
    _MODELS[name] = ModelEntry(name, family, config_cls, model_cls)


def register_experiment(name: str, get_config: Callable[[str], ExperimentConfig]) -> None:
    """Register an experiment: ``get_config(variant)`` for ``variant`` "" (the default) or a named one
    (``"tiny"``: the few-step version the tests train); an unknown variant raises KeyError."""
    if name in _EXPERIMENTS:
        raise ValueError(f"experiment {name!r} registered twice")
    _EXPERIMENTS[name] = get_config


def register_experiment_package(package: str) -> None:
    """Register every public module ``package.some_name`` (one with ``get_config``) as experiment ``some-name``."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            register_experiment(info.name.replace("_", "-"), _module_config(f"{package}.{info.name}"))


def _module_config(module: str) -> Callable[[str], ExperimentConfig]:
    def get_config(variant: str = ""):
        return importlib.import_module(module).get_config(variant)

    get_config.__qualname__ = f"{module}.get_config"
    return get_config


def add_loader(loader: Callable[[], None]) -> None:
    """Run ``loader()`` (which registers models or experiments) before the next look-up."""
    _LOADERS.append(loader)


def _load() -> None:
    while _LOADERS:
        _LOADERS.pop(0)()


def model_entry(name: str) -> ModelEntry:
    _load()
    if name not in _MODELS:
        raise UserError(f"unknown model {name!r}: registered models are {', '.join(sorted(_MODELS))}")
    return _MODELS[name]


def build_model(config: ExperimentConfig) -> GenerativeModel:
    """Build the model of an experiment and check its declaration against its implementation."""
    entry = model_entry(config.model_name)
    if not isinstance(config.model, entry.config_cls):
        raise TypeError(f"model {entry.name!r} needs a {entry.config_cls.__name__}, got {type(config.model).__name__}")
    model = entry.build(config.model)
    check_model(model)
    declared = tuple(p.name for p in config.players)
    if set(declared) != set(model.players):
        raise UserError(
            f"experiment {config.name!r} configures players {declared} but model {entry.name!r} has {model.players}"
        )
    if config.train.lora:
        from aigc_jax.core.lora import parse_lora, with_lora

        model = with_lora(model, parse_lora(config.train.lora, config.train.lora_alpha))
        check_model(model)
    return model


def list_experiments() -> list[str]:
    _load()
    return sorted(_EXPERIMENTS)


def get_config(name: str, variant: str = "") -> ExperimentConfig:
    """The config of experiment ``name`` (``variant='tiny'`` gives the small one the tests use)."""
    _load()
    if name not in _EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}: expected one of {', '.join(sorted(_EXPERIMENTS))}")
    try:
        return _EXPERIMENTS[name](variant)
    except KeyError:
        raise UserError(f"experiment {name!r} has no variant {variant!r}") from None
