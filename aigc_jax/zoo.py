"""The composition root: the one place that registers every built-in model family and experiment, and the
plug-ins of other packages.

Built-in families are a static table. Built-in experiments are the files of the repository's top-level
``experiments/`` folder, shipped in the wheel as the package ``aigc_jax.experiments``; in a source checkout
(an editable install) that folder is loaded under the same package name. A plug-in is an ``importlib.metadata``
entry point in the group ``aigc_jax.models`` (`aigc_jax.core.registry.ENTRY_POINT_GROUP`)::

    [project.entry-points."aigc_jax.models"]
    my_model = "my_package.aigc:register"

whose object, when loaded, is called with no arguments (a module is just imported); it registers its models and
experiments with `aigc_jax.core.registry.register_model` and `register_experiment`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

from aigc_jax.core import registry
from aigc_jax.models.autoregressive.gpt import GPT, GPTConfig
from aigc_jax.models.autoregressive.pixelcnn import PixelCNN, PixelCNNConfig
from aigc_jax.models.diffusion.latent import LatentFlowConfig, LatentFlowModel
from aigc_jax.models.diffusion.model import DDPMConfig, DDPMModel, FlowConfig, FlowModel
from aigc_jax.models.gan.model import GAN, GANConfig
from aigc_jax.models.gan.pix2pix import Pix2Pix, Pix2PixConfig
from aigc_jax.models.vae.model import VAE, VAEConfig

# name, family, config class, model class
FAMILIES = (
    ("vae", "vae", VAEConfig, VAE),
    ("gan", "gan", GANConfig, GAN),
    ("pix2pix", "gan", Pix2PixConfig, Pix2Pix),
    ("gpt", "autoregressive", GPTConfig, GPT),
    ("pixelcnn", "autoregressive", PixelCNNConfig, PixelCNN),
    ("ddpm", "diffusion", DDPMConfig, DDPMModel),
    ("flow", "diffusion", FlowConfig, FlowModel),
    ("latent-flow", "diffusion", LatentFlowConfig, LatentFlowModel),
)
EXPERIMENTS_PACKAGE = "aigc_jax.experiments"


def _experiments_package() -> str:
    """Make ``aigc_jax.experiments`` importable: the wheel's copy, or the source checkout's ``experiments/``."""
    if importlib.util.find_spec(EXPERIMENTS_PACKAGE) is None and EXPERIMENTS_PACKAGE not in sys.modules:
        folder = Path(__file__).resolve().parent.parent / "experiments"
        spec = importlib.util.spec_from_file_location(EXPERIMENTS_PACKAGE, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        if spec is None or spec.loader is None:  # pragma: no cover  (a broken install)
            raise ImportError(f"aigc_jax: no experiments package (looked in {folder})")
        module = importlib.util.module_from_spec(spec)
        sys.modules[EXPERIMENTS_PACKAGE] = module
        spec.loader.exec_module(module)
    return EXPERIMENTS_PACKAGE


def load_plugins() -> None:
    """Load every entry point of the group ``aigc_jax.models``; a failing plug-in is named in the error."""
    for ep in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as e:
            raise ImportError(f"aigc_jax plug-in {ep.name!r} ({ep.value}) failed to load: {e}") from e


def _register_builtins() -> None:
    for name, family, config_cls, model_cls in FAMILIES:
        registry.register_model(name, family, config_cls, model_cls)
    registry.add_loader(lambda: registry.register_experiment_package(_experiments_package()))
    registry.add_loader(load_plugins)


_register_builtins()
