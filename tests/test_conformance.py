"""One conformance suite over every registered experiment (its tiny variant)."""

import jax
import numpy as np
import pytest

from aigc_jax.checkpoint import Checkpointer
from aigc_jax.core import config as cfglib
from aigc_jax.core.contract import sampling_params
from aigc_jax.core.registry import build_model, get_config, list_experiments
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.setup import build_setup
from tests.helpers import tree_equal

EXPERIMENTS = list_experiments()
# Every experiment's tiny variant, plus options that no default experiment uses.
CASES = [(name, ()) for name in EXPERIMENTS] + [
    ("conv-vae-mnist", ("model.likelihood=continuous_bernoulli", "data.binarize=none")),
    ("dcgan-mnist", ("model.loss=hinge", "model.spectral_norm=true", "model.d_norm=layer", "model.g_norm=none",
                     "model.ema_decay=0")),
    ("vae-mnist", ("players.vae.optim.name=adamw", "players.vae.optim.weight_decay=0.1",
                   "players.vae.optim.warmup_steps=2", "players.vae.optim.clip_norm=1.0")),
]


def test_every_experiment_file_loads():
    assert {"vae-mnist", "conv-vae-mnist", "beta-vae-mnist", "cvae-mnist"} <= set(EXPERIMENTS)
    for name in EXPERIMENTS:
        for variant in ("", "tiny"):
            cfg = get_config(name, variant)
            cfglib.validate(cfg)
            assert cfg.name == name


@pytest.fixture(scope="module", params=CASES, ids=lambda c: " ".join([c[0], *c[1]]))
def run(request, devices):
    name, overrides = request.param
    cfg = cfglib.apply_overrides(get_config(name, "tiny"), overrides)
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    src = sources.for_experiment(cfg, "train")
    it = train_iterator(src, cfg.data, setup.examples_per_step)
    batches = [meshlib.to_global(next(it), setup.batch_sharding) for _ in range(3)]
    return cfg, setup, batches


def _two_steps(setup, batches, seed=0):
    state = setup.init_state(seed)
    losses = []
    for b in batches[:2]:
        state, m = setup.train_step(state, b)
        # One loss per player: "loss", or "generator/loss" and "discriminator/loss".
        losses += [float(v) for k, v in m.items() if k.split("/")[-1] == "loss"]
    return state, losses


def test_init_under_eval_shape(run):
    cfg, setup, _ = run
    model = build_model(cfg)
    params, _ = jax.eval_shape(model.init, jax.random.key(0))
    leaves = jax.tree.leaves(params)
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert set(params) == set(model.players)


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


def test_sample_shape_and_range(run):
    cfg, setup, _ = run
    state = setup.init_state(0)
    num = 6
    cond = setup.model.sample_conditions(num)
    params = sampling_params(setup.model, state["params"], state["model_state"])
    imgs = jax.jit(lambda p, k, c: setup.model.sample(p, k, num, **c))(params, jax.random.key(3), cond)
    if getattr(setup.model, "sample_kind", "image") == "text":
        toks = np.asarray(imgs)
        assert toks.shape == (num, 1 + cfg.model.sample_tokens) and toks.dtype == np.int32
        assert toks.min() >= 0 and toks.max() < cfg.model.vocab_size
        assert len(np.unique(toks[:, 1:])) > 1
        return
    assert imgs.shape == (num, *cfg.model.image_shape)
    assert imgs.dtype == np.float32
    arr = np.asarray(imgs)
    assert np.all(np.isfinite(arr)) and arr.min() >= 0.0 and arr.max() <= 1.0
    assert arr.std() > 0


def test_checkpoint_round_trip_is_exact(run, tmp_path):
    cfg, setup, batches = run
    state, _ = _two_steps(setup, batches)
    src = sources.for_experiment(cfg, "train")
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
    assert jax.tree.structure(state) == jax.tree.structure(restored)
    got_next = next(it2)
    assert all(np.array_equal(expected_next[k], got_next[k]) for k in expected_next)
