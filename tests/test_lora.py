"""LoRA (`aigc_jax.core.lora`, ``--lora RANK[:REGEX]``): the merged weight computes the paper's x W + s (x A) B,
only the adapters train (the base is bit-identical and has no optimizer state), a LoRA run loads merged weights
that give the trained model's outputs, and the errors a user can cause are one clear line."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aigc_jax
from aigc_jax.api import get_config, restore_run
from aigc_jax.core import config as cfglib
from aigc_jax.core.errors import UserError
from aigc_jax.core.lora import add_adapters, is_adapter, merge_adapters
from aigc_jax.core.paths import param_paths
from aigc_jax.core.registry import build_model
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.loop import _check_resumable, train
from aigc_jax.train.optim import trainable_counts
from aigc_jax.train.setup import build_setup


def _nonzero_b(params, key):
    """Adapters with B drawn at random (a fresh B is zero, which would hide a wrong product)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, x: jax.random.normal(jax.random.fold_in(key, hash(str(path)) % 2**31), x.shape)
        if str(path[-1]).endswith("_lora_b')") else x, params)


def test_merged_weights_compute_the_low_rank_update_in_activation_space():
    key = jax.random.key(0)
    w_dense = jax.random.normal(key, (6, 5))
    w_out = jax.random.normal(jax.random.fold_in(key, 1), (3, 4, 2, 6))  # stacked layers [L=3], heads 4, dim 2 -> 6
    params = {"m": {"dense": {"kernel": w_dense}, "wo": w_out}}
    with_ad = add_adapters(params, {"m/dense/kernel": (0, 1), "m/wo": (1, 2)}, rank=2, key=key)
    assert with_ad["m"]["dense"]["kernel_lora_a"].shape == (6, 2) and with_ad["m"]["wo_lora_b"].shape == (3, 2, 6)
    np.testing.assert_array_equal(merge_adapters(with_ad, 0.5)["m"]["wo"], w_out)  # B = 0: the base exactly
    with_ad = _nonzero_b(with_ad, jax.random.key(3))
    scale = 0.75
    merged = merge_adapters(with_ad, scale)
    assert jax.tree.structure(merged) == jax.tree.structure(params)
    assert jax.tree.structure(merge_adapters(merged, scale)) == jax.tree.structure(merged)
    x = jax.random.normal(jax.random.key(5), (7, 6))
    a, b = with_ad["m"]["dense"]["kernel_lora_a"], with_ad["m"]["dense"]["kernel_lora_b"]
    np.testing.assert_allclose(x @ merged["m"]["dense"]["kernel"], x @ w_dense + scale * (x @ a) @ b, rtol=1e-5,
                               atol=1e-5)
    h = jax.random.normal(jax.random.key(6), (7, 4, 2))  # per-head outputs, read as one 8-wide input per layer
    a, b = with_ad["m"]["wo_lora_a"], with_ad["m"]["wo_lora_b"]
    for layer in range(3):
        lora = (h.reshape(7, 8) @ a[layer]) @ b[layer]
        np.testing.assert_allclose(jnp.einsum("nhd,hdc->nc", h, merged["m"]["wo"][layer]),
                                   jnp.einsum("nhd,hdc->nc", h, w_out[layer]) + scale * lora, rtol=1e-5, atol=1e-5)


def test_only_the_adapters_train_and_the_base_has_no_optimizer_state(devices):
    cfg = get_config("gpt-shakespeare-char-cpu", ["train.lora=2:gpt/blocks/.*/w[qv]", "players.gpt.optim.lr=0.05",
                                                  "players.gpt.optim.warmup_steps=0"], variant="tiny")
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    state = setup.init_state(0)
    before = param_paths(jax.device_get(state["params"]))
    adapters = [p for p in before if is_adapter(p)]
    assert adapters == sorted(adapters) and len(adapters) == 2 * 2 * cfg.model.layers  # wq, wv: A and B per layer
    for _ in range(3):
        state, _ = setup.train_step(state, meshlib.to_global(next(it), setup.batch_sharding))
    after = param_paths(jax.device_get(state["params"]))
    for p, v in before.items():
        assert np.array_equal(v, after[p]) != is_adapter(p), p
    trainable, total = trainable_counts(cfg, setup.abstract_state["params"])
    assert trainable == sum(v.size for p, v in before.items() if is_adapter(p))
    moments = sum(x.size for x in jax.tree.leaves(setup.abstract_state["opt_state"]) if x.ndim)
    assert moments == 2 * trainable  # Adam's mu and nu of the adapters, nothing for the frozen base


def test_lora_on_the_cpu_gpt_trains_under_five_percent_and_on_one_gan_player_only():
    cfg = get_config("gpt-shakespeare-char-cpu", ["train.lora=4"])
    trainable, total = trainable_counts(cfg, jax.eval_shape(build_model(cfg).init, jax.random.key(0))[0])
    assert 0 < trainable / total <= 0.05
    cfg = get_config("dcgan-mnist", ["train.lora=2:generator/.*"], variant="tiny")
    params = jax.eval_shape(build_model(cfg).init, jax.random.key(0))[0]
    trainable, total = trainable_counts(cfg, params)
    disc = sum(x.size for x in jax.tree.leaves(params["discriminator"]))
    gen_adapters = sum(v.size for p, v in param_paths(params).items() if is_adapter(p))
    assert gen_adapters and trainable == disc + gen_adapters  # the discriminator has no adapters: it trains fully


def test_a_lora_run_loads_merged_weights_that_give_its_outputs(tmp_path):
    over = ["train.steps=3", "train.eval_every=0", "train.sample_every=0", "train.checkpoint_every=3",
            "train.num_eval_batches=1", "players.gpt.optim.lr=0.05", "players.gpt.optim.warmup_steps=0"]
    train(get_config("gpt-shakespeare-char-cpu", over, variant="tiny"), tmp_path / "base", progress=False)
    cfg = get_config("gpt-shakespeare-char-cpu", [*over, "train.lora=2", f"train.init_from={tmp_path / 'base'}"],
                     variant="tiny")
    summary = train(cfg, tmp_path / "ft", progress=False)
    assert summary["parameters"]["trainable"] < summary["parameters"]["total"]
    _, src, _ = restore_run(tmp_path / "base")
    setup, state, _ = restore_run(tmp_path / "ft")
    trained = param_paths(jax.device_get(state["params"]))
    for p, v in param_paths(jax.device_get(src["params"])).items():
        np.testing.assert_array_equal(trained[p], v)  # the pretrained base, untouched
    assert any(np.any(v) for p, v in trained.items() if p.endswith("_lora_b"))

    loaded = aigc_jax.load(tmp_path / "ft")
    assert not any(is_adapter(p) for p in param_paths(loaded.params))
    toks = jax.random.randint(jax.random.key(1), (2, cfg.model.context + 1), 0, cfg.model.vocab_size)
    batch = {"tokens": toks}
    plain = build_model(get_config("gpt-shakespeare-char-cpu", variant="tiny"))
    plain_loss = jax.jit(lambda p: plain.loss("gpt", p, {}, batch, None)[0])  # jitted: eager ops are slow
    with_adapters = jax.jit(lambda p: setup.model.loss("gpt", p, {}, batch, None)[0])(state["params"])
    np.testing.assert_allclose(float(plain_loss(loaded.params)), float(with_adapters), rtol=1e-6)
    assert float(with_adapters) != float(plain_loss(jax.device_get(src["params"])))
    assert jax.jit(loaded.sample_fn, static_argnums=2)(loaded.params, jax.random.key(0), 2).shape[0] == 2


def test_lora_mistakes_are_one_clear_error():
    with pytest.raises(UserError, match=r"train.lora='0': expected RANK or RANK:REGEX"):
        get_config("vae-mnist", ["train.lora=0"])
    with pytest.raises(UserError, match="not a regular expression"):
        get_config("vae-mnist", ["train.lora=4:(("])
    with pytest.raises(UserError, match="train.lora_alpha=-1.0: expected a positive number"):
        get_config("vae-mnist", ["train.lora=4", "train.lora_alpha=-1"])
    with pytest.raises(UserError, match=r"matches no adaptable weight of this model \(adaptable weights look like "
                                        r"vae/decoder/layers/0/kernel"):
        build_model(get_config("vae-mnist", ["train.lora=4:vae/nothing"]))
    stored = cfglib.to_dict(get_config("vae-mnist", ["train.lora=4"]))
    with pytest.raises(UserError, match=r"differs in train.lora"):
        _check_resumable(stored, get_config("vae-mnist", ["train.lora=8"]), "runs/x")
