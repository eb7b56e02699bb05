"""The model contract, registry, config schema and errors. Imports nothing above ``aigc_jax.core``."""

from aigc_jax.core.config import DataConfig as DataConfig
from aigc_jax.core.config import ExperimentConfig as ExperimentConfig
from aigc_jax.core.config import ModelConfig as ModelConfig
from aigc_jax.core.config import OptimConfig as OptimConfig
from aigc_jax.core.config import PlayerConfig as PlayerConfig
from aigc_jax.core.config import TrainConfig as TrainConfig
from aigc_jax.core.config import apply_overrides as apply_overrides
from aigc_jax.core.contract import Condition as Condition
from aigc_jax.core.contract import Extras as Extras
from aigc_jax.core.contract import GenerativeModel as GenerativeModel
from aigc_jax.core.contract import ImageToImage as ImageToImage
from aigc_jax.core.contract import LatentVariable as LatentVariable
from aigc_jax.core.contract import Likelihood as Likelihood
from aigc_jax.core.contract import ModelSpec as ModelSpec
from aigc_jax.core.contract import Partitioned as Partitioned
from aigc_jax.core.contract import SeparateSamplingWeights as SeparateSamplingWeights
from aigc_jax.core.contract import StateUpdates as StateUpdates
from aigc_jax.core.errors import UserError as UserError
from aigc_jax.core.registry import build_model as build_model
from aigc_jax.core.registry import get_config as get_config
from aigc_jax.core.registry import list_experiments as list_experiments
from aigc_jax.core.registry import register_experiment as register_experiment
from aigc_jax.core.registry import register_model as register_model
