"""Diffusion and flow: processes against closed forms, samplers on Gaussian toys with exact denoisers, guidance,
the U-Net's shape and equivariance, and the variational bound's pieces."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from aigc_jax.core.errors import UserError
from aigc_jax.models.diffusion import (
    DDPMConfig,
    DDPMModel,
    FlowConfig,
    FlowModel,
    LatentFlowConfig,
    LatentFlowModel,
    processes,
    samplers,
)
from aigc_jax.models.diffusion import model as dmodel
from aigc_jax.nn import ParamKeys
from aigc_jax.nn.mlp import ResidualMLP
from aigc_jax.nn.unet import UNet
from tests.helpers import random_like

MU, SD0 = 0.3, 0.5  # the toy data distribution N(MU, SD0^2) per pixel


def gaussian_denoiser(process):
    """The exact ``(E[x0 | x_t], E[eps | x_t])`` when x0 ~ N(MU, SD0^2): x_t = a x0 + s eps is Gaussian, so
    E[x0 | x_t] = MU + a SD0^2 (x_t - a MU) / (a^2 SD0^2 + s^2)."""
    def denoise(x, t):
        a, s = processes._bcast(process.coefficients(t), x)
        x0 = MU + a * SD0 ** 2 * (x - a * MU) / (a ** 2 * SD0 ** 2 + s ** 2)
        eps = s * (x - a * MU) / (a ** 2 * SD0 ** 2 + s ** 2)
        return x0, eps
    return denoise


def test_the_linear_schedule_is_a_process_at_every_length():
    """Scaled by 1000 / T (improved DDPM), the linear betas reach 1 at T = 20 and pass it below: clipped at 0.999,
    every length keeps alpha_bar > 0 (a finite x0 from an eps prediction, finite derivatives); T >= 21 and the
    paper's T = 1000 are the unclipped schedule."""
    for T in (5, 10, 20, 21, 50, 1000):
        p = processes.DDPM(T, "linear")
        assert p.betas.max() < 1.0 and p.alpha_bar[-1] > 0.0, T
        if T > 20:
            np.testing.assert_allclose(p.betas, np.linspace(0.1 / T, 20.0 / T, T), rtol=1e-12)
    assert processes.DDPM(1000).betas[[0, -1]].tolist() == pytest.approx([1e-4, 0.02])
    assert processes.DDPM(20).betas[-1] == 0.999


def test_ddpm_marginals_match_the_simulated_markov_chain():
    """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z simulated step by step has mean a(t) x0 and variance
    s(t)^2 (both schedules), and the cosine schedule's alpha_bar is Nichol & Dhariwal's f(t) / f(0)."""
    rng = np.random.default_rng(0)
    for schedule in ("linear", "cosine"):
        p = processes.DDPM(1000, schedule)
        a, s = map(np.asarray, p.coefficients(jnp.arange(1000)))
        x0 = 0.7
        x = np.full(20_000, x0)
        for t, beta in enumerate(p.betas):
            x = np.sqrt(1 - beta) * x + np.sqrt(beta) * rng.standard_normal(x.shape)
            if t in (0, 99, 499, 999):
                assert abs(x.mean() - a[t] * x0) < 4 * s[t] / math.sqrt(x.size) + 1e-4, (schedule, t)
                assert abs(x.var() / s[t] ** 2 - 1) < 0.05, (schedule, t)
    f = np.cos((np.arange(1001) / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(processes.DDPM(1000, "cosine").alpha_bar[:900], (f[1:] / f[0])[:900], rtol=1e-6)
    np.testing.assert_allclose(processes.DDPM(1000, "linear").betas[[0, -1]], [1e-4, 0.02])


def test_flow_path_and_logit_normal_times():
    p = processes.Flow()
    x0, eps = jnp.array([[0.5]]), jnp.array([[-1.2]])
    for t in (0.0, 0.25, 1.0):
        np.testing.assert_allclose(processes.forward_marginal(p, x0, jnp.array([t]), eps),
                                   (1 - t) * x0 + t * eps, atol=1e-7)
    t = np.asarray(p.sample_time(jax.random.key(0), 100_000))
    logits = np.log(t / (1 - t))
    assert abs(logits.mean()) < 0.02 and abs(logits.std() - 1) < 0.02


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
def test_ddpm_targets_and_their_inverse(target):
    """Each parameterisation's target at known (x0, eps, t), and its conversion back recovers x0 and eps."""
    p = processes.DDPM(1000, "cosine", target)
    key = jax.random.key(0)
    x0 = jax.random.uniform(key, (4, 3, 3, 1), minval=-1, maxval=1)
    eps = jax.random.normal(jax.random.fold_in(key, 1), x0.shape)
    t = jnp.array([0, 10, 500, 990])
    a, s = processes._bcast(p.coefficients(t), x0)
    expected = {"eps": eps, "x0": x0, "v": a * eps - s * x0}[target]
    np.testing.assert_allclose(p.target_of(x0, eps, t), expected, atol=1e-6)
    x_t = processes.forward_marginal(p, x0, t, eps)
    x0_back, eps_back = p.to_x0_eps(expected, x_t, t)
    np.testing.assert_allclose(x0_back, x0, atol=2e-3 if target == "eps" else 1e-5)
    np.testing.assert_allclose(eps_back, eps, atol=2e-3 if target == "x0" else 1e-5)


def test_flow_target_is_the_path_velocity():
    p = processes.Flow()
    x0, eps = jnp.array([[0.4, -0.9]]), jnp.array([[1.1, 0.2]])
    t, h = 0.37, 1e-3
    xt = lambda u: processes.forward_marginal(p, x0, jnp.array([u]), eps)  # noqa: E731
    np.testing.assert_allclose(p.target_of(x0, eps, t), (xt(t + h) - xt(t - h)) / (2 * h), atol=1e-3)
    np.testing.assert_allclose(p.to_x0_eps(eps - x0, xt(t), jnp.array([t])), (x0, eps), atol=1e-6)


def test_ddpm_eta_one_is_the_posterior_of_ho_et_al():
    """On consecutive steps, DDIM with eta = 1 has DDPM's posterior variance beta-tilde and mean
    c0 x0 + ct x_t (Ho et al. 2020, eq. 7)."""
    p = processes.DDPM(1000, "linear")
    ab, betas = p.alpha_bar, p.betas
    for t in (1, 50, 999):
        a, s = np.sqrt(ab[t]), np.sqrt(1 - ab[t])
        a_n, s_n = np.sqrt(ab[t - 1]), np.sqrt(1 - ab[t - 1])
        sigma, direction = map(float, samplers.ddim_coefficients(a, s, a_n, s_n, 1.0))
        beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t]
        np.testing.assert_allclose(sigma ** 2, beta_tilde, rtol=1e-5)
        x0, xt = 0.3, -0.8
        mean = a_n * x0 + direction * (xt - a * x0) / s
        c0 = np.sqrt(ab[t - 1]) * betas[t] / (1 - ab[t])
        ct = np.sqrt(1 - betas[t]) * (1 - ab[t - 1]) / (1 - ab[t])
        np.testing.assert_allclose(mean, c0 * x0 + ct * xt, rtol=1e-4, atol=1e-6)


def test_ddim_eta0_is_deterministic_and_inverts():
    """With the exact Gaussian denoiser: eta = 0 gives the same sample for any key; inverting it recovers the
    starting noise, with an error that falls with the steps (first order); eta = 1 depends on the key."""
    p = processes.DDPM(1000, "linear")
    denoise = gaussian_denoiser(p)
    xT = jax.random.normal(jax.random.key(0), (256, 1, 1, 1))
    errors = []
    for steps in (100, 200, 400):
        times = p.grid(steps)
        x0 = samplers.ddim(p, denoise, xT, times, jax.random.key(1))
        again = samplers.ddim(p, denoise, xT, times, jax.random.key(2))
        np.testing.assert_array_equal(x0, again)
        back = samplers.ddim_inversion(p, denoise, x0, times)
        errors.append(float(jnp.max(jnp.abs(back - xT))))
    assert errors[2] < 0.05 and errors[2] < 0.6 * errors[1] < 0.36 * errors[0], errors
    # The samples have the data distribution's moments.
    x0 = samplers.ddim(p, denoise, jax.random.normal(jax.random.key(3), (20_000, 1, 1, 1)), p.grid(100),
                       jax.random.key(4))
    assert abs(float(x0.mean()) - MU) < 0.01 and abs(float(x0.std()) - SD0) < 0.01
    a = samplers.ddim(p, denoise, xT, p.grid(20), jax.random.key(1), eta=1.0)
    b = samplers.ddim(p, denoise, xT, p.grid(20), jax.random.key(2), eta=1.0)
    assert float(jnp.max(jnp.abs(a - b))) > 0.01


def test_flow_ode_samplers_are_exact_on_a_gaussian():
    """For x0 ~ N(MU, SD0^2) the flow ODE maps noise z to MU + SD0 z (the marginals stay Gaussian with the
    standardised value fixed). Both converge to it, Euler to first order and Heun to second (its error is 1/40 of
    Euler's at 50 steps and falls 4x per doubling); on the flow path DDIM with eta = 0 is exactly Euler."""
    p = processes.Flow()
    denoise = gaussian_denoiser(p)
    z = jnp.linspace(-3, 3, 61).reshape(-1, 1, 1, 1)
    exact = MU + SD0 * z
    key = jax.random.key(0)
    def error(sampler, steps):
        return float(jnp.max(jnp.abs(sampler(p, denoise, z, p.grid(steps), key) - exact)))

    h50, h100, h200 = (error(samplers.heun, n) for n in (50, 100, 200))
    e50, e100 = error(samplers.euler, 50), error(samplers.euler, 100)
    assert h200 < 1e-4 and h100 < 0.3 * h50 and h200 < 0.3 * h100, (h50, h100, h200)
    assert 0.45 * e50 < e100 < 0.55 * e50 and h50 < e50 / 20, (e50, e100, h50)
    np.testing.assert_allclose(samplers.ddim(p, denoise, z, p.grid(50), key),
                               samplers.euler(p, denoise, z, p.grid(50), key), atol=1e-5)
    assert samplers.function_evaluations("heun", 50) == 99


def test_grids():
    np.testing.assert_array_equal(processes.DDPM(1000).grid(4), [999, 666, 333, 0])
    assert len(processes.DDPM(1000).grid(1000)) == 1000
    np.testing.assert_allclose(processes.Flow().grid(4), [1.0, 0.75, 0.5, 0.25])
    with pytest.raises(ValueError, match="expected 1..1000"):
        processes.DDPM(1000).grid(1001)


def _tiny(cls, cfg_cls, **changes):
    cfg = cfg_cls(image_shape=(8, 8, 1), channels=8, channel_mults=(1, 2), num_res_blocks=1,
                  attention_resolutions=(4,), num_classes=3, ema_decay=0.0, **changes)
    cfg.validate()
    model = cls(cfg)

    @jax.jit  # one compile instead of the eager U-Net initialisation (seconds of op-by-op dispatch)
    def init():
        params, _ = model.init(jax.random.key(0))
        # A fresh U-Net predicts zero (its last convolutions start at zero): perturb every weight.
        return jax.tree.map(lambda x, n: x + 0.3 * n, params, random_like(params, jax.random.key(1)))

    return model, init()


def test_guidance_zero_and_one_are_the_unconditional_and_conditional_models():
    model, params = _tiny(FlowModel, FlowConfig, sampler="euler", clip_denoised=False)
    key, labels = jax.random.key(5), jnp.array([0, 1, 2, 1])
    sample = jax.jit(model.sample, static_argnums=2, static_argnames=("steps", "guidance"))  # compiled, not eager
    uncond = sample(params, key, 4, steps=3)
    cond = sample(params, key, 4, label=labels, steps=3)
    assert float(jnp.max(jnp.abs(uncond - cond))) > 1e-3  # the label matters
    np.testing.assert_allclose(sample(params, key, 4, label=labels, steps=3, guidance=0.0), uncond, atol=1e-5)
    np.testing.assert_allclose(sample(params, key, 4, label=labels, steps=3, guidance=1.0), cond, atol=1e-5)
    # w = 2 extrapolates the prediction: 2 cond - uncond, one step at a time.
    x, t = jax.random.normal(key, (4, 8, 8, 1)), jnp.full((4,), 0.6)
    c, u, g = jax.jit(lambda p, x, t, y: (model.predict(p, x, t, y), model.predict(p, x, t, None), samplers.guided(
        lambda x, t, y: model.predict(p, x, t, y), y, 3, 2.0)(x, t)))(params, x, t, labels)
    np.testing.assert_allclose(g, 2 * c - u, atol=1e-5)


def _unet_forward(shape, mults, patch):
    """A tiny U-Net's output on three random images, initialised and applied under jit (fast to compile)."""
    def make():
        return UNet(shape, 8, mults, 1, (7, 8), 0.0, 10, patch_size=patch, rngs=ParamKeys(0))

    graph, _ = nnx.split(nnx.eval_shape(make))
    x = jax.random.normal(jax.random.key(0), (3, *shape))
    apply = jax.jit(lambda s, x: nnx.merge(graph, s)(x, jnp.array([1.0, 500.0, 999.0]), jnp.array([0, 5, 10])))
    return apply(jax.jit(lambda: nnx.state(make()))(), x), x


def test_unet_shapes_batch_equivariance_and_conditioning():
    for shape, mults, patch in (((28, 28, 1), (1, 2, 2), 1), ((16, 16, 3), (1, 2), 2)):
        out, x = _unet_forward(shape, mults, patch)
        assert out.shape == x.shape
        np.testing.assert_array_equal(out, 0.0)  # zero-initialised output convolution
    model, params = _tiny(DDPMModel, DDPMConfig)
    x = jax.random.normal(jax.random.key(2), (5, 8, 8, 1))
    t, y = jnp.array([3, 100, 500, 700, 999]), jnp.array([0, 1, 2, 3, 1])
    predict = jax.jit(model.predict)
    out = predict(params, x, t, y)
    perm = jnp.array([4, 2, 0, 1, 3])
    np.testing.assert_allclose(predict(params, x[perm], t[perm], y[perm]), out[perm], atol=1e-5)
    # No example sees another (per-example GroupNorm): new inputs for the others leave example 0's output as it was
    # (the same batch shape, so the same compiled program).
    others = predict(params, x.at[1:].set(jax.random.normal(jax.random.key(3), (4, 8, 8, 1))), t, y)
    np.testing.assert_allclose(others[:1], out[:1], atol=1e-5)
    assert float(jnp.max(jnp.abs(others[1:] - out[1:]))) > 1e-4
    assert float(jnp.max(jnp.abs(predict(params, x, t + 1, y) - out))) > 1e-4
    assert float(jnp.max(jnp.abs(predict(params, x, t, (y + 1) % 3) - out))) > 1e-4


def test_discretized_decoder_is_a_distribution_and_the_bound_is_finite():
    grid = jnp.linspace(-1.0, 1.0, 256)
    for mean, std in ((0.1, 0.01), (-0.99, 0.05), (1.0, 0.3)):
        lp = dmodel._discretized_gaussian_log_prob(grid, jnp.full_like(grid, mean), std)
        np.testing.assert_allclose(float(jnp.sum(jnp.exp(lp))), 1.0, atol=1e-4)
    model, params = _tiny(DDPMModel, DDPMConfig, timesteps=20, sample_steps=4)
    x = jnp.round(jax.random.uniform(jax.random.key(0), (2, 8, 8, 1)) * 255) / 255
    # Jitted: the terms outside the scan over t (the prior, the decoder's U-Net call) would run op by op.
    terms = jax.jit(model.vlb_terms)(params, x * 2 - 1, jax.random.key(1), jnp.array([0, 1]))
    ab_T = model.process.alpha_bar[-1]
    x0 = np.asarray(x * 2 - 1)
    prior = 0.5 * np.sum(ab_T * x0 ** 2 + (1 - ab_T) - 1 - np.log(1 - ab_T), axis=(1, 2, 3))
    # The prior term is ~1e-9 nats here (alpha_bar_T ~ 6e-11); in float32, 1 - alpha_bar_T rounds to 1 and the term to
    # 0: compared to 1e-6 nats absolute (the bound itself is thousands of nats).
    np.testing.assert_allclose(terms["prior"], prior, rtol=1e-4, atol=1e-6)
    assert all(bool(jnp.all(jnp.isfinite(v)) & jnp.all(v >= -1e-3)) for k, v in terms.items() if k != "decoder")
    lp = jax.jit(model.log_prob)(params, {"image": x, "label": jnp.array([0, 1])}, jax.random.key(1))
    np.testing.assert_allclose(lp, -(terms["prior"] + terms["diffusion"] + terms["decoder"]), rtol=1e-6)
    with pytest.raises(UserError, match="needs a key"):
        model.log_prob(params, {"image": x, "label": jnp.array([0, 1])})


def test_sampler_settings_are_validated():
    model, params = _tiny(DDPMModel, DDPMConfig)
    key = jax.random.key(0)
    with pytest.raises(UserError, match="sampler='heun': expected one of ddim, ddpm"):
        model.sample(params, key, 2, sampler="heun")
    with pytest.raises(UserError, match=r"steps=0: expected an integer >= 1 and <= 1000"):
        model.sample(params, key, 2, steps=0)
    with pytest.raises(UserError, match="guidance=-1"):
        model.sample(params, key, 2, guidance=-1.0)
    with pytest.raises(UserError, match="model.sampler='heun': expected one of ddim, ddpm"):
        DDPMConfig(sampler="heun").validate()
    with pytest.raises(UserError, match=r"\[5\] is not a feature-map size of this U-Net \(its levels are 14, 7\)"):
        DDPMConfig(attention_resolutions=(7, 5), patch_size=2).validate()


def _tiny_latent(**changes):
    cfg = LatentFlowConfig(image_shape=(8, 8, 1), latent_dim=3, encoder_hidden=(16,), width=16, depth=2,
                           num_classes=3, ema_decay=0.9, **changes)
    cfg.validate()
    model = LatentFlowModel(cfg)

    @jax.jit
    def init():
        params, state = model.init(jax.random.key(0))
        # A fresh denoiser predicts zero (its last layers start at zero): perturb every weight.
        return jax.tree.map(lambda x, n: x + 0.3 * n, params, random_like(params, jax.random.key(1))), state

    return model, *init()


def test_residual_mlp_starts_at_zero_and_treats_examples_independently():
    def make():
        return ResidualMLP(5, 16, 2, 0.0, 4, rngs=ParamKeys(0))

    graph, _ = nnx.split(nnx.eval_shape(make))
    state = jax.jit(lambda: nnx.state(make()))()
    x, t, y = jax.random.normal(jax.random.key(0), (4, 5)), jnp.array([0.0, 10.0, 500.0, 999.0]), jnp.arange(4)
    apply = jax.jit(lambda s, x, t, y: nnx.merge(graph, s)(x, t, y))
    np.testing.assert_array_equal(apply(state, x, t, y), 0.0)  # the zero-initialised output layer
    state = jax.tree.map(lambda a, n: a + 0.3 * n, state, random_like(state, jax.random.key(1)))
    out = apply(state, x, t, y)
    assert out.shape == (4, 5)
    perm = jnp.array([2, 0, 3, 1])
    np.testing.assert_allclose(apply(state, x[perm], t[perm], y[perm]), out[perm], atol=1e-5)
    assert float(jnp.max(jnp.abs(apply(state, x, t + 50.0, y) - out))) > 1e-4  # time matters
    assert float(jnp.max(jnp.abs(apply(state, x, t, (y + 1) % 4) - out))) > 1e-4  # so does the label


def test_latent_flow_samples_are_the_decoded_flow_and_its_players_are_separate():
    model, params, state = _tiny_latent()
    assert model.players == ("autoencoder", "denoiser") and set(params) == set(model.players)
    key, labels = jax.random.key(3), jnp.array([0, 1, 2, 1])
    images = jax.jit(lambda p: model.sample(p, key, 4, label=labels, steps=5, guidance=2.0))(params)
    assert images.shape == (4, 8, 8, 1) and float(images.min()) >= 0.0 and float(images.max()) <= 1.0

    # The same samples by hand: Euler on the latent with the guided denoiser, then the decoder.
    @jax.jit
    def by_hand(p):
        k0, ks = jax.random.split(key)
        z = jax.random.normal(k0, (4, 3), jnp.float32)
        z = samplers.euler(model.process, model.denoiser(p, labels, 2.0), z, model.process.grid(5), ks)
        return model.decode(p, z)

    np.testing.assert_allclose(images, by_hand(params), atol=1e-6)

    batch = {"image": jax.random.uniform(jax.random.key(4), (6, 8, 8, 1)), "label": jnp.array([0, 1, 2, 0, 1, 2])}
    # The denoiser's loss sends no gradient to the autoencoder (its latents are data to it), and the
    # autoencoder's loss none to the denoiser.
    grad_ae = jax.jit(jax.grad(lambda ae: model.loss("denoiser", {**params, "autoencoder": ae}, state, batch,
                                                     jax.random.key(5))[0]))(params["autoencoder"])
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(grad_ae))
    grad_den = jax.jit(jax.grad(lambda d: model.loss("autoencoder", {**params, "denoiser": d}, state, batch,
                                                     jax.random.key(5))[0]))(params["denoiser"])
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(grad_den))

    # The autoencoder's objective: binary cross-entropy with the grey levels plus kl_weight x the Gaussian KL.
    loss, (metrics, _) = jax.jit(lambda p: model.loss("autoencoder", p, state, batch, jax.random.key(5)))(params)
    x = np.asarray(batch["image"], np.float64)
    mean, logvar = (np.asarray(a, np.float64) for a in model.encode(params, batch["image"]))
    kl = 0.5 * np.sum(mean ** 2 + np.exp(logvar) - 1 - logvar, axis=1)
    np.testing.assert_allclose(metrics["kl"], kl.mean(), rtol=1e-4)
    np.testing.assert_allclose(loss, metrics["reconstruction"] + 0.01 * metrics["kl"], rtol=1e-5)
    # ... at z = mean + exp(logvar / 2) * n, n the normal draw of the loss's key.
    noise = np.asarray(jax.random.normal(jax.random.key(5), mean.shape), np.float64)
    z = jnp.asarray(mean + np.exp(0.5 * logvar) * noise, jnp.float32)
    logits = np.asarray(model.decode_logits(params, z), np.float64)
    bce = np.sum(np.logaddexp(0.0, logits) - x * logits, axis=(1, 2, 3))  # -x log p - (1 - x) log(1 - p)
    np.testing.assert_allclose(metrics["reconstruction"], bce.mean(), rtol=1e-4)

    # The flow's noise is independent of the posterior sample it noises: with the fresh denoiser predicting zero,
    # the loss is E|eps - z0|^2 = 1 + E[z0^2] per latent dimension (a shared draw would make it about E[mean^2]).
    fresh, _ = model.init(jax.random.key(0))
    fresh = {**fresh, "autoencoder": params["autoencoder"]}
    big = {"image": jax.random.uniform(jax.random.key(6), (4096, 8, 8, 1)), "label": jnp.zeros((4096,), jnp.int32)}
    zero_loss = float(jax.jit(lambda p: model.loss("denoiser", p, state, big, jax.random.key(7))[0])(fresh))
    m, lv = model.encode(params, big["image"])
    second_moment = float(jnp.mean(m ** 2 + jnp.exp(lv)))
    np.testing.assert_allclose(zero_loss, 1.0 + second_moment, rtol=0.05)

    # The weight average follows the denoiser's updates only; sampling uses it with the autoencoder as trained.
    moved = {**params, "denoiser": jax.tree.map(lambda a: a + 1.0, params["denoiser"])}
    assert model.after_update("autoencoder", moved, state) is state
    after = model.after_update("denoiser", moved, state)
    assert int(after["ema_count"]) == 1
    sp = model.sampling_params(moved, after)
    assert sp["autoencoder"] is moved["autoencoder"] and sp["denoiser"] is after["ema"]


def test_latent_flow_config_is_validated():
    with pytest.raises(UserError, match=r"model.kl_weight=0.0: expected > 0"):
        LatentFlowConfig(kl_weight=0.0).validate()
    with pytest.raises(UserError, match=r"model.clip_denoised=true clips to \[-1, 1\]"):
        LatentFlowConfig(clip_denoised=True).validate()
    with pytest.raises(UserError, match=r"model.encoder_hidden=\(\): expected one or more widths"):
        LatentFlowConfig(encoder_hidden=()).validate()
    with pytest.raises(UserError, match=r"model.sampler='lms': expected one of ddim, ddpm, euler, heun"):
        LatentFlowConfig(sampler="lms").validate()
