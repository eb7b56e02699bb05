"""GAN family numerics: player isolation in the one train step, the gradient penalty, spectral norm, the EMA."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.core import config as cfglib
from aigc_jax.core.errors import UserError
from aigc_jax.core.registry import build_model, get_config
from aigc_jax.data.pipeline import make_device_transform
from aigc_jax.models.gan import losses, spectral
from aigc_jax.train.optim import make_optimizers
from aigc_jax.train.step import build_train_step, init_state
from tests.helpers import tree_equal


def _gan(name="dcgan-mnist", overrides=()):
    cfg = cfglib.apply_overrides(get_config(name, "tiny"), overrides)
    model = build_model(cfg)
    opts = make_optimizers(cfg)
    return cfg, model, opts


def _batch(n=16, labels=True):
    rng = np.random.default_rng(0)
    b = {"image": rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)}
    if labels:
        b["label"] = rng.integers(0, 10, (n,), dtype=np.int32)
    return b


def test_each_player_update_leaves_the_other_bit_identical():
    # cgan-mnist has every piece of state: batch-norm statistics, the EMA, spectral-norm vectors.
    cfg, model, opts = _gan("cgan-mnist")
    transform = make_device_transform(cfg.data)
    state = init_state(model, opts, jax.random.key(0))
    batch = _batch()
    after = {}
    for mover, still in (("discriminator", "generator"), ("generator", "discriminator")):
        step = jax.jit(build_train_step(model, opts, ((mover, 1),), transform))
        after[mover], _ = step(state, batch)
        new = after[mover]
        assert tree_equal(new["params"][still], state["params"][still]), f"a {mover} update moved the {still}"
        assert tree_equal(new["opt_state"][still], state["opt_state"][still])
        assert not tree_equal(new["params"][mover], state["params"][mover])
    ms, d_ms, g_ms = state["model_state"], after["discriminator"]["model_state"], after["generator"]["model_state"]
    # Spectral-norm vectors move with discriminator updates only; the generator's statistics and EMA with its own.
    assert not tree_equal(d_ms["sn"], ms["sn"]) and tree_equal(g_ms["sn"], ms["sn"])
    for k in ("ema", "ema_stats", "g_stats", "ema_count"):
        assert tree_equal(d_ms[k], ms[k]) and not tree_equal(g_ms[k], ms[k]), k


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    # D(x) = <w, x> + b has gradient w everywhere, so GP = (||w|| - 1)^2 whatever the interpolation.
    w = jax.random.normal(jax.random.key(1), (5, 4, 3))
    critic = lambda x: jnp.sum(x * w[None], axis=(1, 2, 3)) + 0.7
    real = jax.random.uniform(jax.random.key(2), (8, 5, 4, 3))
    fake = jax.random.uniform(jax.random.key(3), (8, 5, 4, 3))
    gp = losses.gradient_penalty(critic, real, fake, jax.random.key(4))
    expected = (np.linalg.norm(np.asarray(w)) - 1.0) ** 2
    np.testing.assert_allclose(float(gp), expected, rtol=1e-5)


@pytest.mark.parametrize("conv", [dict(kernel_size=(4, 4), strides=2, padding=((1, 1), (1, 1))),
                                  dict(kernel_size=(3, 3), strides=2, padding="SAME"),
                                  dict(kernel_size=(3, 2), strides=(1, 2), padding="VALID"),
                                  dict(kernel_size=(3, 3), strides=2, padding=1)])
def test_conv_as_matmul_equals_the_convolution(conv):
    from flax import nnx

    from aigc_jax.nn.layers import conv_as_matmul

    layer = nnx.Conv(3, 5, rngs=nnx.Rngs(0), **conv)
    x = jax.random.normal(jax.random.key(1), (2, 9, 8, 3))
    np.testing.assert_allclose(conv_as_matmul(layer, x), layer(x), atol=2e-6)
    with pytest.raises(ValueError, match="dilation"):
        conv_as_matmul(nnx.Conv(3, 5, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0)), x)


def test_matmul_lowered_critic_gives_the_same_penalised_loss_and_gradients():
    # d_conv=matmul changes only how the critic's convolutions are lowered: the WGAN-GP critic loss (with the
    # penalty's second-order gradients) and its gradients equal those of d_conv=xla on the same weights.
    models = {impl: _gan("wgan-gp-mnist", [f"model.d_conv={impl}"])[1] for impl in ("xla", "matmul")}
    params, state = models["xla"].init(jax.random.key(0))
    batch = {"image": jnp.asarray(_batch(labels=False)["image"], jnp.float32) / 255.0}

    def value_and_grad(model):
        loss = lambda p: model.loss("discriminator", p, state, batch, jax.random.key(1))[0]
        return jax.jit(jax.value_and_grad(loss))(params)

    (lx, gx), (lm, gm) = value_and_grad(models["xla"]), value_and_grad(models["matmul"])
    np.testing.assert_allclose(lm, lx, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(gm["discriminator"]), jax.tree.leaves(gx["discriminator"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_losses_match_their_formulas():
    r, f = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
    sp = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(losses.discriminator_loss("non_saturating", r, f),
                               np.mean(sp(-np.array([2.0, -1.0]))) + np.mean(sp(np.array([0.5, -3.0]))), rtol=1e-6)
    np.testing.assert_allclose(losses.generator_loss("non_saturating", f), np.mean(sp(-np.array([0.5, -3.0]))),
                               rtol=1e-6)
    # hinge: relu(1 - r) = [0, 2], relu(1 + f) = [1.5, 0]
    np.testing.assert_allclose(losses.discriminator_loss("hinge", r, f), 1.0 + 0.75, rtol=1e-6)
    np.testing.assert_allclose(losses.discriminator_loss("wgan_gp", r, f), -1.25 - 0.5, rtol=1e-6)
    np.testing.assert_allclose(losses.generator_loss("hinge", f), 1.25, rtol=1e-6)


@pytest.mark.parametrize("shape", [(32, 16), (3, 3, 8, 12)])
def test_spectral_norm_power_iteration_converges_to_the_top_singular_value(shape):
    w = jax.random.normal(jax.random.key(0), shape)
    u = spectral.init_vectors({"kernel": w}, jax.random.key(1))["kernel"]
    sigmas = []
    iterate = jax.jit(spectral.power_iteration, static_argnums=2)
    for _ in range(60):
        sigma, u = iterate(w, u, 1)
        sigmas.append(float(sigma))
    top = np.linalg.svd(np.asarray(w).reshape(-1, shape[-1]), compute_uv=False)[0]
    np.testing.assert_allclose(sigmas[-1], top, rtol=1e-4)
    assert abs(sigmas[0] - top) > abs(sigmas[-1] - top)  # it got there by iterating
    # The normalised weight has spectral norm 1.
    params = {"layer": {"kernel": w, "bias": jnp.ones(shape[-1])}}
    normed, _ = spectral.normalise(params, {"layer/kernel": u}, 1)
    m = np.asarray(normed["layer"]["kernel"]).reshape(-1, shape[-1])
    np.testing.assert_allclose(np.linalg.svd(m, compute_uv=False)[0], 1.0, rtol=1e-4)
    np.testing.assert_array_equal(normed["layer"]["bias"], params["layer"]["bias"])


def test_ema_follows_its_update_equation():
    cfg, model, opts = _gan("dcgan-mnist", ("model.ema_decay=0.9",))
    params, state = model.init(jax.random.key(0))
    ema0 = state["ema"]
    new_g = jax.tree.map(lambda x: x + 1.0, params["generator"])
    s1 = model.after_update("generator", {**params, "generator": new_g}, state)
    d1 = min(0.9, 2.0 / 11.0)  # warm-up decay (1 + t) / (10 + t) at t = 1
    for a, e, p in zip(jax.tree.leaves(s1["ema"]), jax.tree.leaves(ema0), jax.tree.leaves(new_g), strict=True):
        np.testing.assert_allclose(a, d1 * e + (1 - d1) * p, rtol=1e-6, atol=1e-7)
    s_late = model.after_update("generator", {**params, "generator": new_g}, {**state, "ema_count": jnp.int32(500)})
    for a, e, p in zip(jax.tree.leaves(s_late["ema"]), jax.tree.leaves(ema0), jax.tree.leaves(new_g), strict=True):
        np.testing.assert_allclose(a, 0.9 * e + 0.1 * p, rtol=1e-6, atol=1e-7)
    assert int(s_late["ema_count"]) == 501
    # A discriminator update leaves the average alone, and sampling reads the average.
    assert model.after_update("discriminator", params, state) is state
    assert model.sampling_params(params, s1)["generator"] is s1["ema"]


def test_ema_counts_only_applied_updates_under_gradient_accumulation():
    cfg, model, opts = _gan("dcgan-mnist", ("players.generator.optim.accumulate_steps=2",))
    state = init_state(model, opts, jax.random.key(0))
    step = jax.jit(build_train_step(model, opts, (("generator", 1),), make_device_transform(cfg.data)))
    s1, _ = step(state, _batch(labels=False))  # accumulated, not applied: params and average unchanged
    assert tree_equal(s1["params"]["generator"], state["params"]["generator"])
    ms, ms0 = s1["model_state"], state["model_state"]
    assert int(ms["ema_count"]) == 0 and tree_equal(ms["ema"], ms0["ema"])
    assert not tree_equal(ms["g_stats"], ms0["g_stats"])  # the batch statistics still move
    s2, _ = step(s1, _batch(labels=False))  # applied
    assert not tree_equal(s2["params"]["generator"], state["params"]["generator"])
    assert int(s2["model_state"]["ema_count"]) == 1


def test_conditional_samples_follow_the_label_and_config_errors():
    cfg, model, opts = _gan("cgan-mnist")
    params, state = model.init(jax.random.key(0))
    sp = model.sampling_params(params, state)
    a = model.sample(sp, jax.random.key(1), 4, label=3)
    b = model.sample(sp, jax.random.key(1), 4, label=jnp.array([3, 3, 3, 3]))
    c = model.sample(sp, jax.random.key(1), 4, label=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with pytest.raises(UserError, match="sampling params"):
        model.sample(params, jax.random.key(1), 4, label=3)
    with pytest.raises(UserError, match="label=10: expected a class in 0..9"):
        model.sample(sp, jax.random.key(1), 4, label=10)
    with pytest.raises(UserError, match="critic without batch statistics"):
        cfglib.validate(cfglib.apply_overrides(get_config("wgan-gp-mnist", "tiny"), ("model.d_norm=batch",)))
    with pytest.raises(UserError, match="divisible"):
        cfglib.validate(cfglib.apply_overrides(get_config("dcgan-mnist", "tiny"), ("model.g_channels=8,4,2",)))
