"""The trainer's update schedule with two players (the shape a GAN takes), on a toy model with known gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import GenerativeModel, ModelSpec, check_model
from aigc_jax.train.step import build_train_step, init_state


@dataclasses.dataclass(frozen=True)
class ToyConfig(ModelConfig):
    dim: int = 3


class TwoPlayers(GenerativeModel):
    """Player a pulls w_a toward the batch mean; player b pulls w_b toward -w_a. The loss records which
    micro-batch each update saw through its metric."""

    players = ("a", "b")

    def __init__(self, config=ToyConfig()):
        self.config = config

    @property
    def spec(self):
        return ModelSpec(output="image", shape=(1, 1, 1))

    def init(self, key):
        ka, kb = jax.random.split(key)
        return {"a": {"w": jax.random.normal(ka, (3,))}, "b": {"w": jax.random.normal(kb, (3,))}}, {}

    def loss(self, player, params, state, batch, key):
        wa, wb = params["a"]["w"], params["b"]["w"]
        target = jnp.mean(batch["image"], axis=(0, 1, 2, 3))
        if player == "a":
            loss = jnp.sum((wa - target) ** 2)
        else:
            loss = jnp.sum((wb + wa) ** 2)
        return loss, ({"batch_mean": target}, state)

    def eval_metrics(self, params, state, batch, key):
        return {"loss": jnp.zeros(batch["image"].shape[0])}

    def _sample(self, params, key, num):
        return jnp.zeros((num, 1, 1, 1))


def _setup(schedule, lr=0.1):
    model = TwoPlayers()
    check_model(model)
    opts = {"a": optax.sgd(lr), "b": optax.sgd(lr)}
    step = jax.jit(build_train_step(model, opts, schedule, lambda b, k: b))
    state = init_state(model, opts, jax.random.key(0))
    return model, step, state


def test_a_players_update_leaves_the_other_bit_identical():
    _, step, state = _setup((("a", 1),))
    batch = {"image": jnp.ones((4, 1, 1, 1))}
    new, _ = step(state, batch)
    np.testing.assert_array_equal(np.asarray(new["params"]["b"]["w"]), np.asarray(state["params"]["b"]["w"]))
    assert not np.array_equal(np.asarray(new["params"]["a"]["w"]), np.asarray(state["params"]["a"]["w"]))


def test_schedule_runs_n_updates_on_successive_micro_batches():
    model, step, state = _setup((("a", 2), ("b", 1)), lr=0.25)
    # Two micro-batches of 2 examples: means 1.0 and 3.0.
    batch = {"image": jnp.array([1.0, 1.0, 3.0, 3.0]).reshape(4, 1, 1, 1)}
    wa0, wb0 = np.asarray(state["params"]["a"]["w"]), np.asarray(state["params"]["b"]["w"])
    new, metrics = step(state, batch)
    # SGD on (w - t)^2 with lr 0.25: w <- w - 0.5 (w - t) = (w + t) / 2; first t = 1, then t = 3.
    wa1 = (wa0 + 1.0) / 2
    wa2 = (wa1 + 3.0) / 2
    np.testing.assert_allclose(new["params"]["a"]["w"], wa2, rtol=1e-6)
    # b then moves once against the *updated* a: w_b <- w_b - 0.5 (w_b + w_a).
    np.testing.assert_allclose(new["params"]["b"]["w"], wb0 - 0.5 * (wb0 + wa2), rtol=1e-6)
    assert float(metrics["a/batch_mean"]) == 2.0  # mean over its two updates
    assert float(metrics["b/batch_mean"]) == 1.0  # b's one update read micro-batch 0
    assert int(new["step"]) == 1
