"""A model defined outside the package, registered as a plug-in (an entry point of the group aigc_jax.models).

Independent Bernoulli pixels with learned logits (``params["toy"]["logits"] [H, W, 1]``): an exact likelihood, so
its NLL has a closed form to test against. `register` adds the model ``toy`` and the experiment ``toy-mnist``.
"""

import dataclasses

import jax
import jax.numpy as jnp

from aigc_jax.core.config import DataConfig, ExperimentConfig, ModelConfig, OptimConfig, PlayerConfig, TrainConfig
from aigc_jax.core.contract import Condition, GenerativeModel, Likelihood, ModelSpec
from aigc_jax.core.registry import register_experiment, register_model


@dataclasses.dataclass(frozen=True)
class ToyConfig(ModelConfig):
    image_shape: tuple[int, ...] = (28, 28, 1)
    temperature: float = 1.0


class ToyBernoulli(GenerativeModel, Likelihood):
    players = ("toy",)

    def __init__(self, config: ToyConfig):
        self.config = config
        h, w, c = config.image_shape
        self._spec = ModelSpec(
            output="image", shape=(h, w, c), data_dims=h * w * c, metrics=("loss", "nll"),
            default_metrics=("loss", "nll"), per_example_loss=True,
            conditions=(Condition("temperature", "setting", dtype="float32", low=0.0, low_open=True,
                                  default=config.temperature),))

    @property
    def spec(self):
        return self._spec

    def init(self, key):
        return {"toy": {"logits": jnp.zeros(self.config.image_shape, jnp.float32)}}, {}

    def log_prob(self, params, batch, key=None):
        lg = params["toy"]["logits"][None]
        x = batch["image"]
        lp = x * jax.nn.log_sigmoid(lg) + (1.0 - x) * jax.nn.log_sigmoid(-lg)
        return lp.reshape(x.shape[0], -1).sum(-1)

    def loss(self, player, params, state, batch, key):
        return -jnp.mean(self.log_prob(params, batch)), ({}, state)

    def eval_metrics(self, params, state, batch, key):
        return {"loss": -self.log_prob(params, batch)}

    def _sample(self, params, key, num, temperature):
        p = jax.nn.sigmoid(params["toy"]["logits"] / temperature)
        return jax.random.bernoulli(key, p, (num, *self.config.image_shape)).astype(jnp.float32)


def toy_experiment(variant: str = ""):
    if variant not in ("", "tiny"):
        raise KeyError(variant)
    return ExperimentConfig(
        name="toy-mnist", model_name="toy", model=ToyConfig(),
        data=DataConfig(name="mnist", batch_size=32, eval_batch_size=100, binarize="dynamic"),
        players=(PlayerConfig(name="toy", optim=OptimConfig(lr=0.1, schedule="constant")),),
        train=TrainConfig(steps=30, log_every=10, checkpoint_every=30, num_eval_batches=2, num_samples=16))


def register():
    register_model("toy", family="toy", config_cls=ToyConfig, model_cls=ToyBernoulli)
    register_experiment("toy-mnist", toy_experiment)
