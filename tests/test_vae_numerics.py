"""Numerics of the VAE family against closed forms and bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aigc_jax.data import load_mnist
from aigc_jax.models.vae import VAE, VAEConfig
from aigc_jax.models.vae import likelihoods as lik


def test_analytic_kl_matches_monte_carlo():
    key = jax.random.key(0)
    mean = jnp.array([[0.3, -1.2, 0.0], [2.0, 0.5, -0.7]])
    logvar = jnp.array([[-0.5, 0.4, 0.0], [0.3, -1.5, 1.0]])
    n = 400_000
    z = mean[None] + jnp.exp(0.5 * logvar)[None] * jax.random.normal(key, (n, *mean.shape))
    mc = jnp.mean(lik.gaussian_log_prob(z, mean[None], logvar[None]) - lik.standard_normal_log_prob(z), axis=0)
    np.testing.assert_allclose(lik.gaussian_kl(mean, logvar), mc, rtol=0.01, atol=0.01)
    # A closed-form spot check: KL(N(m, s^2) || N(0, 1)) per dim = (s^2 + m^2 - 1 - log s^2) / 2.
    exp0 = sum(0.5 * (math.exp(lv) + m * m - 1 - lv) for m, lv in zip([0.3, -1.2, 0.0], [-0.5, 0.4, 0.0], strict=True))
    assert float(lik.gaussian_kl(mean, logvar)[0]) == pytest.approx(exp0, rel=1e-6)


def test_bernoulli_log_prob_closed_form():
    x = jnp.array([[1.0, 0.0, 1.0]])
    logits = jnp.array([[0.3, -2.0, 4.0]])
    p = 1 / (1 + np.exp(-np.array([0.3, -2.0, 4.0])))
    expected = np.log(p[0]) + np.log(1 - p[1]) + np.log(p[2])
    assert float(lik.bernoulli_log_prob(x, logits)[0]) == pytest.approx(expected, rel=1e-6)


def test_bernoulli_log_prob_on_images_equals_the_two_log_sigmoid_form():
    """The one-softplus form on the flattened view: per-image sums of x log s(l) + (1 - x) log s(-l) (numpy, in
    float64) for [B, H, W, 1] images, binary and grey x, logits far in both tails; also the gradient in l,
    x - sigmoid(l), including at l = 0 exactly."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 8.0, (3, 5, 4, 1)).astype(np.float32)
    logits[0, 0, 0, 0], logits[0, 0, 1, 0], logits[0, 0, 2, 0] = 0.0, 60.0, -60.0
    l64 = logits.astype(np.float64)
    log_s = lambda v: -np.logaddexp(0.0, -v)  # noqa: E731  (log sigmoid)
    for x in (rng.random(logits.shape) < 0.5, rng.random(logits.shape)):
        x = x.astype(np.float32)
        want = (x * log_s(l64) + (1 - x) * log_s(-l64)).reshape(3, -1).sum(-1)
        got = lik.bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits))
        assert got.shape == (3,)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-4)
        grad = jax.grad(lambda lg, x=x: lik.bernoulli_log_prob(jnp.asarray(x), lg).sum())(jnp.asarray(logits))
        np.testing.assert_allclose(np.asarray(grad), x - 1 / (1 + np.exp(-l64)), atol=1e-6)
        cb = lik.continuous_bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits))
        norm = np.asarray(lik.continuous_bernoulli_log_norm(jnp.asarray(logits)), np.float64).reshape(3, -1).sum(-1)
        np.testing.assert_allclose(np.asarray(cb), want + norm, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("logit", [-8.0, -1.0, -1e-4, 0.0, 3e-4, 0.7, 6.0])
def test_continuous_bernoulli_is_a_normalised_density(logit):
    x = np.linspace(0.0, 1.0, 20001)
    logits = jnp.full((x.size, 1), logit)
    dens = np.exp(np.asarray(lik.continuous_bernoulli_log_prob(jnp.asarray(x)[:, None], logits), np.float64))
    assert np.trapezoid(dens, x) == pytest.approx(1.0, abs=2e-4)
    mean = np.trapezoid(dens * x, x)
    assert float(lik.continuous_bernoulli_mean(jnp.array([logit]))[0]) == pytest.approx(mean, abs=2e-4)


@pytest.fixture(scope="module")
def trained_small_vae():
    """A small MLP VAE trained briefly on a binarized MNIST subset (shared by the bound tests)."""
    cfg = VAEConfig(hidden=(64,), latent_dim=8, iwae_samples=100, iwae_chunk=10)
    model = VAE(cfg)
    data = load_mnist("train").images[:2048].astype(np.float32) / 255.0
    x_all = jnp.asarray(np.random.default_rng(0).random(data.shape) < data, jnp.float32)
    params, state = model.init(jax.random.key(0))
    opt = optax.adam(2e-3)
    os_ = opt.init(params["vae"])

    @jax.jit
    def step(p, o, x, key):
        g = jax.grad(lambda q: model.loss("vae", {"vae": q}, {}, {"image": x}, key)[0])(p)
        with jax.numpy_dtype_promotion("standard"):  # Optax's bias correction mixes float and int
            u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o

    p = params["vae"]
    for i in range(300):
        j = i % 16
        p, os_ = step(p, os_, x_all[j * 128:(j + 1) * 128], jax.random.key(i))
    return model, {"vae": p}, x_all[:64]


def test_elbo_below_importance_weighted_bounds(trained_small_vae):
    model, params, x = trained_small_vae
    batch = {"image": x}
    # Average over many draws of the estimator: E[log p_k] increases with k (Burda et al. 2016, thm. 1).
    fn = jax.jit(lambda key, k: model.log_prob(params, batch, key, num_samples=k, chunk=min(k, 10)),
                 static_argnums=1)
    bounds = {k: float(np.mean([np.mean(fn(jax.random.key(s), k)) for s in range(8)])) for k in (1, 10, 100)}
    elbo = float(np.mean([-model.eval_metrics(params, {}, batch, jax.random.key(s))["neg_elbo"].mean()
                          for s in range(8)]))
    assert bounds[1] == pytest.approx(elbo, abs=1.0)  # k=1 is the ELBO, up to Monte-Carlo noise
    assert elbo < bounds[10] < bounds[100]
    assert bounds[100] - bounds[1] > 0.5


def test_overfits_one_small_batch():
    model = VAE(VAEConfig(hidden=(128,), latent_dim=8))
    x = (load_mnist("test").images[:16].astype(np.float32) / 255.0 > 0.5).astype(np.float32)
    params, _ = model.init(jax.random.key(1))
    opt = optax.adam(3e-3)
    p, o = params["vae"], opt.init(params["vae"])

    @jax.jit
    def step(p, o, key):
        (loss, _), g = jax.value_and_grad(lambda q: model.loss("vae", {"vae": q}, {}, {"image": x}, key),
                                       has_aux=True)(p)
        with jax.numpy_dtype_promotion("standard"):  # Optax's bias correction mixes float and int
            u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    first = None
    for i in range(400):
        p, o, loss = step(p, o, jax.random.key(i))
        first = float(loss) if first is None else first
    final = float(np.mean([model.loss("vae", {"vae": p}, {}, {"image": x}, jax.random.key(10_000 + s))[0]
                           for s in range(5)]))
    assert first > 500 and final < 60, (first, final)


def test_bfloat16_compute_follows_float32_with_float32_params_and_outputs():
    """The MLP VAE with bfloat16 products (the fast default on CPUs with native bfloat16): the same params (float32
    master copies) give a loss within bfloat16 rounding of the float32 model's, and gradients, taken as the train
    step takes them (inside `reverse_mode_kernels`), that point the same way; outputs and gradients stay float32."""
    from aigc_jax.nn import reverse_mode_kernels

    f32, bf16 = VAE(VAEConfig(hidden=(256, 128))), VAE(VAEConfig(hidden=(256, 128), compute_dtype="bfloat16"))
    params, _ = f32.init(jax.random.key(0))
    assert jax.tree.structure(params) == jax.tree.structure(bf16.init(jax.random.key(0))[0])
    x = {"image": jnp.asarray(load_mnist("test").images[:64] > 127, jnp.float32)}

    def loss_and_grad(model):
        def fn(p):
            with reverse_mode_kernels():
                return jax.value_and_grad(lambda q: model.loss("vae", {"vae": q}, {}, x, jax.random.key(1))[0])(p)
        return jax.jit(fn)(params["vae"])

    (l32, g32), (l16, g16) = loss_and_grad(f32), loss_and_grad(bf16)
    assert float(l16) == pytest.approx(float(l32), rel=5e-3)  # ~540 nats at init; bf16 keeps 8 bits
    mean, logvar = bf16.encode(params, x["image"])
    assert mean.dtype == logvar.dtype == bf16.decode_logits(params, mean).dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(g32), jax.tree.leaves(g16), strict=True):
        assert b.dtype == jnp.float32
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.998  # 0.9988-1.0 per leaf here


def test_bfloat16_compute_needs_the_mlp_networks():
    from aigc_jax.core.errors import UserError
    from aigc_jax.train import host

    with pytest.raises(UserError, match="model.compute_dtype=bfloat16 needs arch=mlp"):
        VAEConfig(arch="conv", compute_dtype="bfloat16").validate()
    VAEConfig(compute_dtype="bfloat16").validate()
    assert host.offers_bf16(VAEConfig()) and not host.offers_bf16(VAEConfig(arch="conv"))
