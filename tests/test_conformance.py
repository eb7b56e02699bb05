"""One conformance suite over every registered experiment (its tiny variant), through the declared contract.

For each: the declaration is checked; every player overfits one fixed batch (the others frozen, one fixed key);
``jax.jvp`` through each player's loss (and a likelihood's ``log_prob``) equals the gradient's directional
derivative; two train steps are finite, compile once and are deterministic; a checkpoint round-trips exactly; a
trained run's ``aigc_jax.sample`` equals ``load(run).sample_fn`` with the loaded params; ``aigc_jax.evaluate``
returns the declared metric groups; conditions are validated.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import aigc_jax
from aigc_jax.checkpoint import Checkpointer
from aigc_jax.core import config as cfglib
from aigc_jax.core.contract import (
    GenerativeModel,
    ImageToImage,
    Likelihood,
    check_model,
    grid_conditions,
)
from aigc_jax.core.errors import UserError
from aigc_jax.core.registry import build_model, get_config, list_experiments, model_entry
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.setup import build_setup
from tests.helpers import COVERED, random_like, tiny_run, tree_equal

EXPERIMENTS = list_experiments()


def _param(name):
    return pytest.param(name, marks=pytest.mark.slow if name in COVERED else ())


# Every experiment's tiny variant, plus options that no default experiment uses.
CASES = [(name, ()) for name in EXPERIMENTS] + [
    ("conv-vae-mnist", ("model.likelihood=continuous_bernoulli", "data.binarize=none")),
    ("dcgan-mnist", ("model.loss=hinge", "model.spectral_norm=true", "model.d_norm=layer", "model.g_norm=none",
                     "model.ema_decay=0")),
    ("vae-mnist", ("players.vae.optim.name=adamw", "players.vae.optim.weight_decay=0.1",
                   "players.vae.optim.warmup_steps=2", "players.vae.optim.clip_norm=1.0")),
]
OVERFIT_STEPS = 40
OVERFIT_DROP = 0.3  # the loss falls by at least 30% of max(|initial loss|, 0.5) in OVERFIT_STEPS Adam steps


def test_every_experiment_file_loads():
    assert {"vae-mnist", "conv-vae-mnist", "beta-vae-mnist", "cvae-mnist", "dcgan-mnist", "gpt-shakespeare-char",
            "pixelcnn-mnist", "pix2pix-mnist"} <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        for variant in ("", "tiny"):
            cfg = get_config(name, variant)
            cfglib.validate(cfg)
            assert cfg.name == name
            check_model(build_model(cfg))


@pytest.fixture(scope="module", params=[pytest.param(c, marks=pytest.mark.slow if c[0] in COVERED and not c[1] else ())
                                        for c in CASES], ids=lambda c: " ".join([c[0], *c[1]]))
def run(request, devices):
    name, overrides = request.param
    cfg = cfglib.apply_overrides(get_config(name, "tiny"), overrides)
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    src = sources.for_experiment(cfg, "train", setup.model.spec)
    it = train_iterator(src, cfg.data, setup.examples_per_step)
    batches = [meshlib.to_global(next(it), setup.batch_sharding) for _ in range(3)]
    return cfg, setup, batches


def _device_batch(setup, batch):
    """The first micro-batch of a train batch after the device transform (what a player's loss sees)."""
    n = setup.config.data.batch_size
    return setup.transform(jax.tree.map(lambda x: x[:n], batch), jax.random.key(7))


def test_declaration_matches_the_implementation(run):
    _, setup, _ = run
    model = setup.model
    assert isinstance(model, GenerativeModel)
    check_model(model)
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    assert set(params) == set(model.players)
    spec = model.spec
    assert spec.default_metrics and set(spec.default_metrics) <= set(spec.metrics)
    if isinstance(model, Likelihood):
        assert spec.data_dims == (int(np.prod(spec.shape)))


def _random_tangent(tree, key):
    return random_like(tree, key)


def _directional(grad, tangent):
    return sum(jnp.vdot(g, t) for g, t in zip(jax.tree.leaves(grad), jax.tree.leaves(tangent), strict=True))


@pytest.fixture(scope="module", params=[_param(n) for n in EXPERIMENTS])
def fixed_batch(request, devices):
    """A registered model, its fresh params and state, and one train batch after the device transform."""
    cfg = get_config(request.param, "tiny")
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    batch = _device_batch(setup, next(it))
    params, state = jax.jit(setup.model.init)(jax.random.key(0))  # eager, op by op, takes seconds
    return cfg, setup.model, params, state, batch


def test_each_player_overfits_one_batch_and_forward_mode_equals_reverse(fixed_batch):
    """Per player, others frozen, one fixed key: OVERFIT_STEPS Adam steps cut the loss by OVERFIT_DROP; and
    ``jax.jvp`` of the loss along a random tangent equals the gradient's directional derivative. One program."""
    cfg, model, params, state, batch = fixed_batch
    key = jax.random.key(1)
    # bfloat16 compute rounds the forward and the reverse pass differently: agreement to about 1% only.
    rtol = 2e-2 if getattr(cfg.model, "compute_dtype", "float32") == "bfloat16" else 2e-3
    opt = optax.adam(3e-3)
    for i, player in enumerate(model.players):
        def objective(p, player=player):
            return model.loss(player, {**params, player: p}, state, batch, key)[0]

        @jax.jit
        def check(p0, tangent, objective=objective):
            def body(carry, _):
                p, o = carry
                loss, g = jax.value_and_grad(objective)(p)
                with jax.numpy_dtype_promotion("standard"):  # Optax's bias correction mixes float and int
                    u, o = opt.update(g, o, p)
                # The gradient's directional derivative along the tangent; the first step's is at p0 (one
                # reverse pass in the program instead of a second one outside the scan).
                return (optax.apply_updates(p, u), o), (loss, _directional(g, tangent))

            (p, _), (losses, directional) = jax.lax.scan(body, (p0, opt.init(p0)), None, length=OVERFIT_STEPS)
            _, jvp = jax.jvp(objective, (p0,), (tangent,))
            return losses[0], objective(p), jvp, directional[0]

        p0 = params[player]
        first, last, jvp, expected = map(float, check(p0, _random_tangent(p0, jax.random.fold_in(key, i))))
        assert np.isfinite(first) and np.isfinite(last)
        assert last <= first - OVERFIT_DROP * max(abs(first), 0.5), (player, first, last)
        np.testing.assert_allclose(jvp, expected, rtol=rtol, atol=rtol * max(1.0, abs(expected)) / 2)


# By class (building every tiny model here would cost seconds of collection in each worker).
LIKELIHOODS = [n for n in EXPERIMENTS
               if issubclass(model_entry(get_config(n, "tiny").model_name).model_cls, Likelihood)]


@pytest.mark.parametrize("fixed_batch", [_param(n) for n in LIKELIHOODS], indirect=True)
def test_forward_mode_through_the_likelihood(fixed_batch):
    """A likelihood's ``log_prob``: ``jax.jvp`` equals the directional derivative, and ``jax.jacfwd`` w.r.t. the
    smallest parameter array equals ``jax.jacrev``."""
    cfg, model, params, state, batch = fixed_batch
    batch = jax.tree.map(lambda x: x[:4], batch)  # 4 examples' Jacobians (jacrev costs one pass per example)
    key = jax.random.key(2)
    rtol = 2e-2 if getattr(cfg.model, "compute_dtype", "float32") == "bfloat16" else 2e-3
    player = model.players[0]
    leaves, treedef = jax.tree.flatten(params[player])
    idx = min((j for j in range(len(leaves)) if leaves[j].size > 1), key=lambda j: leaves[j].size)

    def per_example(w):
        new = treedef.unflatten([w if j == idx else x for j, x in enumerate(leaves)])
        return model.log_prob({**params, player: new}, batch, key)

    @jax.jit
    def check(p, tangent):
        total = lambda q: jnp.sum(model.log_prob(q, batch, key))  # noqa: E731
        _, jvp = jax.jvp(total, (p,), (tangent,))
        return jvp, _directional(jax.grad(total)(p), tangent), jax.jacfwd(per_example)(leaves[idx]), \
            jax.jacrev(per_example)(leaves[idx])

    jvp, expected, fwd, rev = check(params, _random_tangent(params, key))
    np.testing.assert_allclose(float(jvp), float(expected), rtol=rtol, atol=rtol * max(1.0, abs(float(expected))) / 2)
    assert fwd.shape == (batch[next(iter(batch))].shape[0], *leaves[idx].shape)
    np.testing.assert_allclose(np.asarray(fwd), np.asarray(rev), rtol=rtol, atol=rtol * float(np.abs(rev).max()))


def _two_steps(setup, batches, seed=0):
    state = setup.init_state(seed)
    losses = []
    for b in batches[:2]:
        state, m = setup.train_step(state, b)
        # One loss per player: "loss", or "generator/loss" and "discriminator/loss".
        losses += [float(v) for k, v in m.items() if k.split("/")[-1] == "loss"]
    return state, losses


def test_finite_loss_one_compile_and_determinism(run):
    cfg, setup, batches = run
    state_a, losses = _two_steps(setup, batches)
    assert losses and all(np.isfinite(losses))
    assert setup.train_step._cache_size() == 1, "the second step recompiled"
    assert int(state_a["step"]) == 2
    state_b, _ = _two_steps(setup, batches)
    assert tree_equal(state_a, state_b), "same seed and data gave different states"
    state_c, _ = _two_steps(setup, batches, seed=1)
    assert not tree_equal(state_a["params"], state_c["params"])


def test_checkpoint_round_trip_is_exact(run, tmp_path):
    cfg, setup, batches = run
    state, _ = _two_steps(setup, batches)
    src = sources.for_experiment(cfg, "train", setup.model.spec)
    it = train_iterator(src, cfg.data, setup.examples_per_step)
    next(it)
    ck = Checkpointer(tmp_path / "ck", keep=2)
    ck.save(2, state, it, cfglib.to_dict(cfg))
    ck.wait()
    expected_next = next(it)
    it2 = train_iterator(src, cfg.data, setup.examples_per_step)
    step, restored = ck.restore(setup.abstract_state, it2)
    ck.close()
    assert step == 2
    assert tree_equal(jax.device_get(state), jax.device_get(restored))
    got_next = next(it2)
    assert all(np.array_equal(expected_next[k], got_next[k]) for k in expected_next)


# ----------------------------------------------------------------------------------------------------------------
# A trained run through the library functions (one per experiment).


# In the default run, one experiment per kind of conditions and params (labels with a latent-variable likelihood,
# a GAN's separate sampling weights, image inputs, tokens, optional labels with sampler settings); every experiment
# under `-m slow`.
DEFAULT_TRAINED = ("cvae-mnist", "dcgan-mnist", "pix2pix-mnist", "gpt-shakespeare-char-cpu", "cflow-mnist")
TRAINED = [pytest.param(n, marks=() if n in DEFAULT_TRAINED else pytest.mark.slow) for n in EXPERIMENTS]


@pytest.fixture(scope="module", params=TRAINED)
def trained(request):
    return request.param, tiny_run(request.param)


def _conditions(model, num, x=None):
    """Conditions for ``num`` samples: the grid's (labels), inputs made from test data for an image-to-image
    model, a short prompt and token count for a token model."""
    spec = model.spec
    if isinstance(model, ImageToImage):
        return {spec.condition("image").name: model.make_input(x)}
    if spec.output == "tokens":
        return {"prompt": np.array([1, 2], np.int32), "tokens": 3}
    return {k: np.asarray(v) for k, v in grid_conditions(spec, num).items()}


def test_sample_equals_load_sample_fn_and_evaluate_gives_the_declared_metrics(trained):
    name, wd = trained
    gen = aigc_jax.load(wd)
    model = aigc_jax.create(name)
    num = 8
    x = None
    if isinstance(model, ImageToImage):
        src = sources.for_experiment(gen.config, "test", model.spec)
        x = src.__getitems__(np.arange(num))["image"].astype(np.float32) / 255.0
    cond = _conditions(model, num, x)
    a = aigc_jax.sample(wd, num, seed=0, **cond)
    b = np.asarray(gen.sample_fn(gen.params, jax.random.key(0), num, **cond))
    assert a.shape == b.shape and a.dtype == b.dtype
    if model.spec.output == "image":
        assert a.shape == (num, *model.spec.shape) and 0.0 <= a.min() and a.max() <= 1.0
        np.testing.assert_allclose(a, b, atol=1e-5)
    else:
        np.testing.assert_array_equal(a, b)
        assert a.shape == (num, 2 + 3) and a.min() >= 0 and a.max() < model.spec.vocab_size
    res = aigc_jax.evaluate(wd, num_samples=20, progress=False)
    assert res["metrics"] == list(model.spec.default_metrics)
    finite = [v for k, v in res.items() if isinstance(v, float)]
    assert finite and np.isfinite(finite).all()
    if "loss" in res["metrics"]:
        assert "test_loss" in res
    if "nll" in res["metrics"]:
        assert any(k.endswith("bits_per_dim") or k.endswith("bits_per_token") for k in res)
    if "fid" in res["metrics"]:
        assert res["num_samples"] == 20 and np.isfinite(res["fid"])


def test_conditions_are_validated(trained):
    name, wd = trained
    gen = aigc_jax.load(wd)
    spec = gen.spec
    key = jax.random.key(0)
    with pytest.raises(UserError, match="unknown condition colour"):
        gen.sample_fn(gen.params, key, 2, colour=1)
    with pytest.raises(UserError, match="positive integer"):
        gen.sample_fn(gen.params, key, 0)
    label = spec.condition("label")
    if label is not None:
        with pytest.raises(UserError, match=rf"label=99: expected a class in 0..{label.num_classes - 1}"):
            aigc_jax.sample(wd, 2, label=99)
        if label.required:
            with pytest.raises(UserError, match="needs label"):
                gen.sample_fn(gen.params, key, 2)
    else:
        with pytest.raises(UserError, match="unknown condition label"):
            aigc_jax.sample(wd, 2, label=1)
    image = spec.condition("image")
    if image is not None:
        with pytest.raises(UserError, match="needs input"):
            gen.sample_fn(gen.params, key, 2)
        with pytest.raises(UserError, match="expected float images of shape"):
            gen.sample_fn(gen.params, key, 2, input=np.zeros((3, 4, 4, 1), np.float32))
    if spec.output == "tokens":
        with pytest.raises(UserError, match="token ids must be in"):
            aigc_jax.sample(wd, 1, prompt=np.array([spec.vocab_size]), tokens=2)
        with pytest.raises(UserError, match="tokens=0"):
            aigc_jax.sample(wd, 1, tokens=0)
        with pytest.raises(UserError, match="top_p=1.5"):
            aigc_jax.sample(wd, 1, tokens=2, top_p=1.5)
