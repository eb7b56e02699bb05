import dataclasses

import pytest

from aigc_jax.api import config_from_dict, get_config
from aigc_jax.core import config as cfglib
from aigc_jax.core.errors import UserError


def test_override_types_are_parsed():
    cfg = get_config("vae-mnist", ["train.steps=7", "players.vae.optim.lr=3e-4", "model.hidden=64,32",
                                   "model.activation=tanh", "data.binarize=none", "model.beta=2",
                                   "model.likelihood=continuous_bernoulli"])
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.player("vae").optim.lr == pytest.approx(3e-4)
    assert cfg.model.hidden == (64, 32)
    assert cfg.model.activation == "tanh"
    assert cfg.data.binarize == "none"
    assert cfg.model.beta == 2.0 and isinstance(cfg.model.beta, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "unknown config key 'train.stepz': 'stepz' is not one of"),
        ("nope=1", "unknown config key 'nope'"),
        ("train.steps=ten", "bad value 'ten' for train.steps: expected an integer"),
        ("model.activation=swish", "bad value 'swish' for model.activation: expected one of 'relu', 'tanh'"),
        ("players.gan.optim.lr=1", "players are named vae"),
        ("train=3", "is a group"),
        ("train.steps", "expected key=value"),
        ("train.steps=0", "bad value 0 for train.steps: expected a positive integer"),
        ("model.iwae_samples=150", "must be a positive multiple of model.iwae_chunk"),
    ],
)
def test_bad_overrides_name_what_is_accepted(override, message):
    with pytest.raises(UserError, match=None) as e:
        get_config("vae-mnist", [override])
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_configs_are_frozen():
    cfg = get_config("vae-mnist")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.steps = 3  # type: ignore[misc]


def test_json_round_trip_is_exact():
    cfg = get_config("cvae-mnist", ["model.hidden=10,20", "players.vae.optim.clip_norm=1.5"])
    again = config_from_dict(cfglib.to_dict(cfg))
    assert again == cfg


def test_schedule_warmup_and_cosine_end_points():
    from aigc_jax.core.config import OptimConfig
    from aigc_jax.train.optim import make_schedule

    sched = make_schedule(OptimConfig(lr=1e-3, warmup_steps=100, final_lr=1e-4), 2000)
    assert float(sched(0)) == pytest.approx(1e-3 / 101, rel=1e-5)  # nanoGPT: lr * (it + 1) / (warmup + 1)
    assert float(sched(50)) == pytest.approx(1e-3 * 51 / 101, rel=1e-5)
    assert float(sched(100)) == pytest.approx(1e-3, rel=1e-5)
    assert float(sched(1050)) == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4), rel=1e-5)  # cosine midpoint
    assert float(sched(2000)) == pytest.approx(1e-4, rel=1e-5)


def test_linear_and_constant_schedules_after_the_warm_up():
    from aigc_jax.core.config import OptimConfig
    from aigc_jax.train.optim import make_schedule

    sched = make_schedule(OptimConfig(lr=1e-4, schedule="linear"), 100)  # WGAN-GP: lr * (1 - t / T)
    assert [float(sched(t)) for t in (0, 25, 99, 100, 150)] == pytest.approx([1e-4, 7.5e-5, 1e-6, 0.0, 0.0], rel=1e-5)
    sched = make_schedule(OptimConfig(lr=1e-3, schedule="linear", warmup_steps=10, final_lr=1e-4), 110)
    assert [float(sched(t)) for t in (0, 10, 60, 110)] == pytest.approx([1e-3 / 11, 1e-3, 5.5e-4, 1e-4], rel=1e-5)
    sched = make_schedule(OptimConfig(lr=1e-3, schedule="constant", warmup_steps=9), 100)
    assert [float(sched(t)) for t in (0, 9, 50, 100)] == pytest.approx([1e-4, 1e-3, 1e-3, 1e-3], rel=1e-5)


def test_each_players_schedule_counts_its_own_updates():
    """A critic that updates n_critic times per step decays over n_critic * steps updates, not over steps."""
    import jax
    import jax.numpy as jnp

    from aigc_jax.train.setup import build_setup

    config = get_config("wgan-gp-mnist", ["train.steps=4", "players.discriminator.updates_per_step=5",
                                          "players.discriminator.optim.schedule=linear",
                                          "players.generator.optim.schedule=linear"], variant="tiny")
    setup = build_setup(config)
    for name, updates in (("discriminator", 20), ("generator", 4)):
        opt = setup.optimizers[name]
        params = {"w": jnp.zeros(())}
        state, lrs = opt.init(params), []
        for _ in range(updates):
            # Adam with a constant gradient of 1 moves a parameter by exactly -lr_t (bias-corrected moments are 1).
            with jax.numpy_dtype_promotion("standard"):  # Optax's bias correction mixes float and int
                delta, state = opt.update({"w": jnp.ones(())}, state, params)
            lrs.append(-float(delta["w"]))
        assert lrs == pytest.approx([1e-4 * (1 - t / updates) for t in range(updates)], rel=1e-4, abs=1e-12)
