"""Populations (``--population K``) and ensembles (``eval --ensemble``): member i of a population trains as the
single run with seed + i would (vmap and loop), the ensemble likelihood is the log-mean-exp of the members' (per
next token for a GPT) against a float64 hand computation, and a population's run loads, evaluates and refuses
what a user can get wrong in one line."""

import jax
import numpy as np
import optax
import pytest

import aigc_jax
from aigc_jax.api import get_config, restore_run
from aigc_jax.core.errors import UserError
from aigc_jax.core.registry import build_model
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.metrics.likelihood import ensemble_log_prob
from aigc_jax.metrics.sample_quality import generate
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.loop import train
from aigc_jax.train.setup import build_setup
from tests.helpers import tree_max_diff


def _batches(cfg, setup, n):
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    return [meshlib.to_global(next(it), setup.batch_sharding) for _ in range(n)]


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_member_i_trains_as_the_single_run_with_seed_plus_i(devices, mode):
    mesh = meshlib.make_mesh("", devices[:1])
    cfg = get_config("vae-mnist", ["train.population=3", f"train.population_mode={mode}", "train.seed=5"],
                     variant="tiny")
    pop = build_setup(cfg, mesh)
    batches = _batches(cfg, pop, 3)
    state = pop.init_state(cfg.train.seed)
    for b in batches:
        state, metrics = pop.train_step(state, b)
    assert metrics["loss"].shape == (3,)
    single_cfg = get_config("vae-mnist", ["train.seed=7"], variant="tiny")
    single = build_setup(single_cfg, mesh)
    s = single.init_state(7)
    for b in batches:
        s, _ = single.train_step(s, b)
    member = jax.device_get(pop.member_state(state, 2))
    assert tree_max_diff(member["params"], jax.device_get(s["params"])) < 1e-5
    assert tree_max_diff(member["params"], jax.device_get(pop.member_state(state, 0))["params"]) > 1e-3


def test_a_population_can_vary_the_learning_rate_across_members(devices):
    mesh = meshlib.make_mesh("", devices[:1])
    cfg = get_config("vae-mnist", ["train.population=2", "train.population_lr_scale=1,0.25"], variant="tiny")
    pop = build_setup(cfg, mesh)
    batches = _batches(cfg, pop, 3)
    state = pop.init_state(0)
    for b in batches:
        state, _ = pop.train_step(state, b)
    lr = cfg.players[0].optim.lr
    single = build_setup(get_config("vae-mnist", [f"players.vae.optim.lr={lr * 0.25}"], variant="tiny"), mesh)
    s = single.init_state(1)
    for b in batches:
        s, _ = single.train_step(s, b)
    member = jax.device_get(pop.member_state(state, 1))
    assert tree_max_diff(member["params"], jax.device_get(s["params"])) < 1e-5
    np.testing.assert_array_equal(optax.tree_utils.tree_get(state["opt_state"], "step_size"), [1.0, 0.25])
    with pytest.raises(UserError, match=r"train.population_lr_scale: expected one positive factor per member of "
                                        r"the population \(train.population=3\)"):
        get_config("vae-mnist", ["train.population=3", "train.population_lr_scale=1,0.5"])


def test_the_ensemble_likelihood_is_the_log_mean_exp_of_the_members():
    # Every call jitted (one compile each): eager transformer and VAE ops would dominate the test's time.
    key = jax.random.key(0)
    gpt = build_model(get_config("gpt-shakespeare-char-cpu", variant="tiny"))
    params = jax.jit(jax.vmap(lambda k: gpt.init(k)[0]))(jax.random.split(key, 3))
    toks = jax.random.randint(jax.random.key(1), (4, gpt.config.context + 1), 0, gpt.config.vocab_size)
    batch = {"tokens": toks}
    per_token = np.asarray(jax.jit(jax.vmap(lambda p: gpt.token_log_probs(p, batch)))(params), np.float64)  # [K,B,T]
    by_hand = np.log(np.exp(per_token).mean(0)).sum(-1)  # the next-token mixture
    mixed = jax.jit(lambda p: ensemble_log_prob(gpt, p, batch, None))(params)
    np.testing.assert_allclose(mixed, by_hand, rtol=1e-5)
    assert np.all(by_hand >= per_token.sum(-1).mean(0) - 1e-9)  # mixing never loses to the members' average

    vae = build_model(get_config("vae-mnist", variant="tiny"))
    params = jax.jit(jax.vmap(lambda k: vae.init(k)[0]))(jax.random.split(key, 2))
    images = (jax.random.uniform(jax.random.key(2), (5, 28, 28, 1)) > 0.5).astype(np.float32)
    batch, k = {"image": images}, jax.random.key(3)
    lp = np.asarray(jax.jit(jax.vmap(lambda p: vae.log_prob(p, batch, k, num_samples=4)))(params), np.float64)
    by_hand = lp.max(0) + np.log(np.exp(lp - lp.max(0)).mean(0))  # [B], from the members' [K, B]
    mixed = jax.jit(lambda p: ensemble_log_prob(vae, p, batch, k, latent_samples=4))(params)
    np.testing.assert_allclose(mixed, by_hand, rtol=1e-5)


def test_a_population_run_loads_each_member_and_evaluates_the_ensemble(tmp_path):
    over = ["train.population=2", "train.steps=3", "train.eval_every=0", "train.sample_every=0",
            "train.num_eval_batches=1"]
    run = tmp_path / "pop"
    summary = train(get_config("vae-mnist", over, variant="tiny"), run, progress=False)
    assert {"loss", "member0/loss", "member1/loss"} <= set(summary["eval"])
    _, state, _ = restore_run(run)
    state = jax.device_get(state)
    one = aigc_jax.load(run, member=1)
    assert tree_max_diff(one.params, jax.tree.map(lambda x: x[1], state["params"])) == 0
    with pytest.raises(UserError, match="is a population of 2: pick member=0..1"):
        aigc_jax.load(run)
    with pytest.raises(UserError, match=r"member 2: this run is a population of 2 \(members 0..1\)"):
        aigc_jax.load(run, member=2)
    result = aigc_jax.evaluate(run, "loss,nll", num_samples=40, importance_samples=5, ensemble=True, progress=False)
    assert result["population"] == 2 and len(result["members"]) == 2
    values = [m["iwae5_nll"] for m in result["members"]]
    assert result["iwae5_nll"] == pytest.approx(np.mean(values))
    assert result["iwae5_nll_sd"] == pytest.approx(np.std(values, ddof=1))
    ens = result["ensemble"]
    assert ens["best_member_iwae5_nll"] == min(values) and ens["iwae5_nll"] < max(values)
    # Generators: the ensemble's samples are the members' mixture, batch b from member b % K (equal to each
    # member's own draw of that batch), and its sample metrics sit beside the best and the mean member's.
    setup, pop_state, _ = restore_run(run)
    states = [setup.member_state(pop_state, i) for i in range(2)]
    mixed, _ = generate(setup.member, states, 8, 3, batch_size=4, progress=False)
    np.testing.assert_array_equal(mixed[:4], generate(setup.member, states[0], 4, 3, batch_size=4,
                                                      progress=False)[0])
    np.testing.assert_array_equal(mixed[4:], generate(setup.member, states[1], 8, 3, batch_size=4,
                                                      progress=False)[0][4:])
    assert np.abs(mixed[:4] - generate(setup.member, states[1], 4, 3, batch_size=4, progress=False)[0]).max() > 0
    result = aigc_jax.evaluate(run, "fid,is", num_samples=20, ensemble=True, progress=False)
    ens, values = result["ensemble"], [m["is_mean"] for m in result["members"]]
    assert ens["mixture_of"] == 2 and ens["best_member_is_mean"] == max(values)
    assert ens["best_member_fid"] == min(m["fid"] for m in result["members"]) and "best_member_is_std" not in ens
    with pytest.raises(UserError, match=r"--ensemble combines likelihoods \(nll\) or samples"):
        aigc_jax.evaluate(run, "loss", ensemble=True, progress=False)
    single = tmp_path / "single"
    train(get_config("vae-mnist", over[1:], variant="tiny"), single, progress=False)
    with pytest.raises(UserError, match="is a single run: an ensemble needs a population"):
        aigc_jax.evaluate(single, "nll", num_samples=20, importance_samples=5, ensemble=True, progress=False)
    with pytest.raises(UserError, match="population"):
        get_config("vae-mnist", ["train.population=0"])
