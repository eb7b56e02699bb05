"""GPT: causality, KV-cache decoding, the sampler on fake logits, and 3-axis sharding on 8 simulated devices."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from aigc_jax.api import get_config
from aigc_jax.core.errors import UserError
from aigc_jax.models.autoregressive import GPT, GPTConfig, sampling
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.setup import build_setup
from tests.helpers import tree_max_diff

SMALL = GPTConfig(vocab_size=13, context=12, layers=2, heads=2, width=16, bias=True)


@pytest.fixture(scope="module")
def small():
    model = GPT(SMALL)
    params, _ = model.init(jax.random.key(0))
    toks = jax.random.randint(jax.random.key(1), (3, SMALL.context), 0, SMALL.vocab_size)
    return model, params, toks


def test_causality_future_tokens_do_not_change_past_logits(small):
    model, params, toks = small
    apply = jax.jit(model.apply)
    base = apply(params, toks)
    for t in (0, 4, SMALL.context - 2):
        changed = toks.at[:, t + 1:].set((toks[:, t + 1:] + 5) % SMALL.vocab_size)
        out = apply(params, changed)
        np.testing.assert_array_equal(np.asarray(out[:, : t + 1]), np.asarray(base[:, : t + 1]))
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:])


def test_cached_decoding_equals_the_full_forward_at_every_position(small):
    model, params, toks = small
    full = model.apply(params, toks)
    logits, cache = model.apply(params, toks[:, :3], None, model.init_cache(3), 0)  # prefill 3 positions
    np.testing.assert_allclose(logits, full[:, :3], atol=1e-5)
    step = jax.jit(lambda c, tok, pos: model.apply(params, tok, None, c, pos))
    for t in range(3, SMALL.context):
        out, cache = step(cache, toks[:, t:t + 1], t)
        np.testing.assert_allclose(out[:, 0], full[:, t], atol=1e-5)


def test_one_position_forward_equals_that_row_of_the_full_forward(small):
    model, params, toks = small
    full = model.apply(params, toks)
    one = jax.jit(lambda at: model.apply(params, toks, at=at))  # a traced index: one program for every position
    for at in (0, 5, SMALL.context - 1):
        np.testing.assert_allclose(one(at), full[:, at:at + 1], atol=1e-5)
    with pytest.raises(ValueError, match="takes no cache"):
        model.apply(params, toks[:, :1], None, model.init_cache(3), 0, at=0)


def test_generate_with_cache_equals_windowed_recompute(small):
    model, params, toks = small
    prompt = toks[:, :4]
    a = jax.jit(lambda k: model.generate(params, prompt, k, 6, temperature=1.0))(jax.random.key(5))
    b = jax.jit(lambda k: model.generate(params, prompt, k, 6, temperature=1.0, use_cache=False))(jax.random.key(5))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 10) and np.array_equal(a[:, :4], prompt)
    long = model.generate(params, prompt, jax.random.key(5), 20, use_cache=False)  # past the context
    assert long.shape == (3, 24)
    with pytest.raises(ValueError, match="exceed the context"):
        model.generate(params, prompt, jax.random.key(5), 20)


def _fake_step(vocab):
    """Logits that put the most mass on (previous token + 1) % vocab and the second most on +2."""

    def step(state, tok, pos):
        logits = jnp.full((tok.shape[0], vocab), -10.0)
        logits = logits.at[jnp.arange(tok.shape[0]), (tok + 1) % vocab].set(2.0)
        logits = logits.at[jnp.arange(tok.shape[0]), (tok + 2) % vocab].set(1.0)
        return logits, state

    return step


def test_sampler_greedy_and_top_k_1_give_the_argmax_chain():
    vocab = 7
    first = _fake_step(vocab)(None, jnp.array([0, 3]), 0)[0]
    expect = np.array([[1, 2, 3, 4, 5], [4, 5, 6, 0, 1]])
    greedy = sampling.decode_loop(_fake_step(vocab), None, first, 1, 5, jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(greedy, expect)
    for seed in range(3):
        topk = sampling.decode_loop(_fake_step(vocab), None, first, 1, 5, jax.random.key(seed), top_k=1)
        np.testing.assert_array_equal(topk, expect)


def test_top_p_edge_cases():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    # A tiny top_p keeps only the most likely token.
    assert np.isfinite(np.asarray(sampling.filter_logits(logits, top_p=1e-6))).tolist() == [[True, False, False,
                                                                                          False]]
    # 0.5 is reached by the first token alone; 0.6 needs the second; 0.95 keeps three; 1.0 keeps all.
    for p, kept in ((0.5, 1), (0.6, 2), (0.95, 3), (1.0, 4)):
        assert int(np.isfinite(np.asarray(sampling.filter_logits(logits, top_p=p))).sum()) == kept, p
    draws = jax.vmap(lambda k: sampling.choose(logits, k, top_p=0.6))(jax.random.split(jax.random.key(0), 2000))
    freq = np.bincount(np.asarray(draws).ravel(), minlength=4) / 2000
    assert freq[2] == freq[3] == 0 and freq[0] == pytest.approx(0.5 / 0.8, abs=0.04)
    # top_k keeps exactly k; temperature sharpens.
    assert int(np.isfinite(np.asarray(sampling.filter_logits(logits, top_k=2))).sum()) == 2
    hot = jax.nn.softmax(sampling.filter_logits(logits, temperature=0.5))
    assert float(hot[0, 0]) > 0.5


# The sharding of every GPT parameter on data=2,fsdp=2,tensor=2 with the default rules
# (vocab:tensor, embed:fsdp, heads:tensor, mlp:tensor).
GOLDEN = {
    "wte": P("tensor", "fsdp"),
    "wpe": P(None, "fsdp"),
    "ln_f/scale": P("fsdp"),
    "blocks/0/ln1/scale": P("fsdp"),
    "blocks/0/wq": P("fsdp", "tensor", None),
    "blocks/0/wk": P("fsdp", "tensor", None),
    "blocks/0/wv": P("fsdp", "tensor", None),
    "blocks/0/wo": P("tensor", None, "fsdp"),
    "blocks/0/w_in": P("fsdp", "tensor"),
    "blocks/0/w_out": P("tensor", "fsdp"),
}


@pytest.fixture(scope="module")
def sharded_pair(devices):
    # The default vocabulary (65 characters, padded to 128 embedding rows) on the three-axis mesh.
    cfg = get_config("gpt-shakespeare-char-cpu", ["model.layers=2", "model.width=32", "model.heads=4",
                                                  "players.gpt.optim.warmup_steps=0",  # a real first update
                                                  "model.context=16", "data.batch_size=8"])
    toks = jax.random.randint(jax.random.key(3), (8, 17), 0, 65)
    out = {}
    for spec, devs in (("", devices[:1]), ("data=2,fsdp=2,tensor=2", devices)):
        setup = build_setup(cfg, meshlib.make_mesh(spec, devs))
        state = setup.init_state(0)
        batch = meshlib.to_global({"tokens": np.asarray(toks)}, setup.batch_sharding)
        def loss(p, batch=batch, setup=setup):
            return setup.model.loss("gpt", p, {}, {"tokens": batch["tokens"]}, None)[0]

        grads = jax.jit(jax.grad(loss))(state["params"])
        before = jax.device_get(state["params"])
        specs = jax.tree.map(lambda x: x.sharding.spec, state["params"])
        new, metrics = setup.train_step(state, batch)  # donates `state`
        out[spec] = (setup, (before, specs), grads, new, metrics)
    return out


def test_three_axis_mesh_matches_one_device(sharded_pair):
    _, _, g1, s1, m1 = sharded_pair[""]
    _, _, g8, s8, m8 = sharded_pair["data=2,fsdp=2,tensor=2"]
    assert float(m8["loss"]) == pytest.approx(float(m1["loss"]), rel=1e-6)
    assert tree_max_diff(jax.device_get(g8), jax.device_get(g1)) < 1e-6
    # Adam's first update is ~lr * g / |g|, which magnifies float-rounding differences of tiny gradients: compare
    # the updated params to 1% of the learning rate (1e-3).
    assert tree_max_diff(jax.device_get(s8["params"]), jax.device_get(s1["params"])) < 1e-5
    _, (before, _), _, _, _ = sharded_pair[""]
    assert tree_max_diff(jax.device_get(s1["params"]), before) > 1e-4  # the step moved them


def test_golden_sharding_table_and_large_weights_sharded(sharded_pair):
    _, (_, specs), _, new, _ = sharded_pair["data=2,fsdp=2,tensor=2"]
    params = specs["gpt"]

    def get(path):
        node = params
        for k in path.split("/"):
            node = node[int(k) if k.isdigit() else k]
        return node

    for path, spec in GOLDEN.items():
        assert get(path) == spec, path
    # Every weight matrix is split 4 ways (fsdp x tensor), the position table 2 ways (fsdp), and they stay so
    # after a step (donated state, explicit out_shardings).
    for path, x in jax.tree_util.tree_flatten_with_path(new["params"]["gpt"])[0]:
        if x.ndim >= 2:
            ways = 2 if path[-1].key == "wpe" else 4
            assert x.addressable_shards[0].data.size * ways == x.size, path


def test_indivisible_sharding_is_a_clear_error(devices):
    cfg = get_config("gpt-shakespeare-char-cpu", ["model.layers=1", "model.width=32", "data.batch_size=8",
                                                  "model.vocab_multiple=1"])
    from aigc_jax.core.errors import UserError

    with pytest.raises(UserError, match=r"parameter gpt/wte \(65, 32\): dimension 0 \(65\) cannot be split over "
                                        r"mesh axis tensor=2; pad it"):
        build_setup(cfg, meshlib.make_mesh("data=2,fsdp=2,tensor=2", devices))
    cfg = get_config("gpt-shakespeare-char-cpu", ["model.axis_rules=embed:tensor,mlp:tensor"])
    with pytest.raises(UserError, match=r"maps two axes of a \('embed', 'mlp'\) weight to the same mesh axis"):
        build_setup(cfg, meshlib.make_mesh("data=4,tensor=2", devices))


def test_cli_text_model_end_to_end(tmp_path, capsys):
    import json

    from aigc_jax.cli import main

    wd = tmp_path / "gpt"
    argv = ["train", "gpt-shakespeare-char-cpu", "--workdir", str(wd), "--steps", "3", "--no-progress",
            "--set", "model.layers=1", "--set", "model.width=16", "--set", "model.heads=2", "--set",
            "model.context=16", "--set", "data.batch_size=8", "--set", "data.eval_batch_size=64", "--set",
            "train.num_eval_batches=2", "--set", "train.log_every=1", "--set", "model.sample_tokens=10"]
    assert main(argv) == 0
    assert json.loads((wd / "tokenizer.json").read_text())["kind"] == "char"
    assert (wd / "samples" / "step_3.txt").read_text().strip()
    capsys.readouterr()
    assert main(["sample", str(wd), "--prompt", "ROMEO:", "--tokens", "30", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) == len("ROMEO:") + 30
    assert main(["sample", str(wd), "--prompt", "ROMEO:", "--tokens", "5", "--temperature", "0"]) == 0
    greedy = capsys.readouterr().out
    assert main(["sample", str(wd), "--prompt", "ROMEO:", "--tokens", "5", "--top-k", "1"]) == 0
    assert capsys.readouterr().out == greedy
    assert main(["sample", str(wd), "--prompt", "ROMEO\u00e9"]) == 2
    assert "outside the model's vocabulary" in capsys.readouterr().err
    assert main(["eval", str(wd), "--no-progress"]) == 0
    res = json.loads((wd / "eval.json").read_text())
    assert 0 < res["test_loss"] < 6 and res["test_perplexity"] == pytest.approx(np.exp(res["test_loss"]))


def _grads(model, params, toks):
    return jax.jit(jax.grad(lambda p: model.loss("gpt", p, {}, {"tokens": toks}, None)[0]))(params)


def test_remat_gives_the_same_gradients(small):
    _, params, toks = small
    plain = GPT(SMALL)
    remat = GPT(GPTConfig(**{**SMALL.__dict__, "remat": True}))
    assert tree_max_diff(_grads(plain, params, toks), _grads(remat, params, toks)) < 1e-6


def test_bf16_compute_keeps_float32_master_params(small):
    _, params, toks = small
    bf16 = GPT(GPTConfig(**{**SMALL.__dict__, "compute_dtype": "bfloat16"}))
    loss32 = float(GPT(SMALL).loss("gpt", params, {}, {"tokens": toks}, None)[0])
    loss16 = float(bf16.loss("gpt", params, {}, {"tokens": toks}, None)[0])
    assert loss16 == pytest.approx(loss32, rel=2e-2)
    grads = _grads(bf16, params, toks)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    # bf16 operands (float32 accumulation, physically transposed backward products on CPU) give the float32
    # gradient up to bf16 rounding
    flat16, flat32 = (jnp.concatenate([g.ravel() for g in jax.tree.leaves(t)])
                      for t in (grads, _grads(GPT(SMALL), params, toks)))
    assert float(flat16 @ flat32 / (jnp.linalg.norm(flat16) * jnp.linalg.norm(flat32))) > 0.999
    logits = bf16.apply(params, toks)
    assert logits.dtype == jnp.float32


def test_data_parallel_step_reduces_one_flat_gradient_and_equals_one_device(devices):
    """On a batch-only mesh the GPT step differentiates per device and all-reduces one flat buffer (gradient and
    loss); three steps equal the single-device step. With dropout the GSPMD step is kept."""
    base = ["model.layers=2", "model.width=32", "model.heads=4", "model.context=16", "data.batch_size=8",
            "players.gpt.optim.warmup_steps=0"]
    cfg = get_config("gpt-shakespeare-char-cpu", base)
    toks = np.asarray(jax.random.randint(jax.random.key(5), (3, 8, 17), 0, 65))
    runs = {}
    for spec, devs in (("", devices[:1]), ("data=4", devices[:4])):
        setup = build_setup(cfg, meshlib.make_mesh(spec, devs))
        state, losses = setup.init_state(0), []
        for t in toks:
            state, metrics = setup.train_step(state, meshlib.to_global({"tokens": t}, setup.batch_sharding))
            losses.append(float(metrics["loss"]))
        runs[spec] = (setup, jax.device_get(state["params"]), losses)
    setup4, p4, l4 = runs["data=4"]
    _, p1, l1 = runs[""]
    assert setup4.per_device_gradients and not runs[""][0].per_device_gradients
    assert l4 == pytest.approx(l1, rel=1e-6)
    assert tree_max_diff(p4, p1) < 1e-6
    hlo = setup4.train_step.lower(setup4.init_state(0), meshlib.to_global({"tokens": toks[0]},
                                                                         setup4.batch_sharding)).compile().as_text()
    n_params = sum(x.size for x in jax.tree.leaves(p4))
    reductions = [line for line in hlo.splitlines() if " all-reduce(" in line]
    assert len(reductions) == 1 and f"f32[{n_params + 1}]" in reductions[0]  # the gradient and the loss

    dropout = build_setup(get_config("gpt-shakespeare-char-cpu", [*base, "model.dropout=0.1"]),
                          meshlib.make_mesh("data=4", devices[:4]))
    assert not dropout.per_device_gradients


def test_gradient_accumulation_equals_one_big_batch(devices):
    """Two accumulated micro-steps of 8 sequences apply the same update as one step on the 16 together."""
    base = ["model.layers=1", "model.width=16", "model.heads=2", "model.context=16",
            "players.gpt.optim.warmup_steps=0"]  # so that the first update has a non-zero learning rate
    toks = np.asarray(jax.random.randint(jax.random.key(4), (16, 17), 0, 65))
    mesh = meshlib.make_mesh("", devices[:1])

    big = build_setup(get_config("gpt-shakespeare-char-cpu", [*base, "data.batch_size=16"]), mesh)
    init = jax.device_get(big.init_state(0)["params"])
    s_big, _ = big.train_step(big.init_state(0), meshlib.to_global({"tokens": toks}, big.batch_sharding))
    assert tree_max_diff(jax.device_get(s_big["params"]), init) > 1e-4

    acc = build_setup(get_config("gpt-shakespeare-char-cpu", [*base, "data.batch_size=8", "train.steps=4000",
                                                              "players.gpt.optim.accumulate_steps=2"]), mesh)
    s = acc.init_state(0)
    s, _ = acc.train_step(s, meshlib.to_global({"tokens": toks[:8]}, acc.batch_sharding))
    assert tree_max_diff(jax.device_get(s["params"]), init) == 0.0  # the first micro-step only accumulates
    s, _ = acc.train_step(s, meshlib.to_global({"tokens": toks[8:]}, acc.batch_sharding))
    # The schedules agree: 2000 applied updates either way (train.steps counts micro-steps).
    assert tree_max_diff(jax.device_get(s["params"]), jax.device_get(s_big["params"])) < 1e-6


def test_train_steps_equal_the_pytorch_twin_in_lockstep(devices):
    """From the same weights and batches, our jitted train step (AdamW, decay mask, warm-up + cosine schedule,
    clipping) follows `benchmarks/torch_gpt.py` (nanoGPT's recipe in PyTorch) step by step."""
    torch = pytest.importorskip("torch")
    from benchmarks.torch_gpt import make_twin, nanogpt_lr, to_jax_params

    layers, heads, width, ctx, steps, warmup = 2, 2, 32, 16, 12, 3
    cfg = get_config("gpt-shakespeare-char-cpu", [f"model.layers={layers}", f"model.heads={heads}",
                                                  f"model.width={width}", f"model.context={ctx}", "data.batch_size=4",
                                                  f"train.steps={steps}", f"players.gpt.optim.warmup_steps={warmup}",
                                                  "players.gpt.optim.lr=3e-3", "players.gpt.optim.clip_norm=0.5"])
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    torch.manual_seed(0)
    tstep, _, _ = make_twin(65, ctx, layers, heads, width, lr=3e-3, clip=0.5, threads=1)
    state = dict(setup.init_state(0))
    start = to_jax_params(tstep.model, layers, heads, cfg.model.padded_vocab)
    params = jax.device_put(jax.tree.map(jnp.asarray, start))
    state["params"] = params
    state["opt_state"] = {"gpt": setup.optimizers["gpt"].init(params["gpt"])}

    rng = np.random.default_rng(0)
    for it in range(steps):
        toks = rng.integers(0, 65, (4, ctx + 1)).astype(np.int32)
        for group in tstep.opt.param_groups:
            group["lr"] = nanogpt_lr(it, lr=3e-3, warmup=warmup, decay_iters=steps)
        torch_loss = float(tstep(toks).detach())
        state, metrics = setup.train_step(state, meshlib.to_global({"tokens": toks}, setup.batch_sharding))
        assert float(metrics["loss"]) == pytest.approx(torch_loss, abs=2e-5), it
    ours = jax.device_get(state["params"])
    theirs = to_jax_params(tstep.model, layers, heads, cfg.model.padded_vocab)
    assert tree_max_diff(ours, theirs) < 2e-5
    assert tree_max_diff(ours, start) > 1e-2  # the weights did move


def test_tokenizers_default_prompt_and_out_of_vocabulary_ids():
    from aigc_jax.data.text import ByteTokenizer, CharTokenizer, default_prompt

    byte = ByteTokenizer()
    text = "naïve → ok"
    assert byte.decode(byte.encode(text)) == text  # multi-byte UTF-8 round trip
    assert byte.decode([104, 105, 300, 33]) == "hi\ufffd!"  # a padded vocabulary's ids past 255
    assert default_prompt(byte).tolist() == [10]
    char = CharTokenizer.from_text("ab\ncab")
    assert default_prompt(char).tolist() == [0] and char.chars[0] == "\n"
    assert default_prompt(CharTokenizer.from_text("zyx")).tolist() == [0]  # no newline: token 0
    assert char.decode([1, 2, 7]) == "ab\ufffd"


def test_char_encoding_is_each_characters_index_in_the_vocabulary():
    """The vectorised lookup gives ``chars.index(c)`` for every character: the embedded corpus, characters beyond
    the Basic Multilingual Plane, a vocabulary not in code point order (a hand-written tokenizer.json), and an
    error naming exactly the characters that are missing."""
    from aigc_jax.data.text import CharTokenizer, read_corpus

    text = read_corpus("shakespeare")
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    index = {c: i for i, c in enumerate(tok.chars)}
    np.testing.assert_array_equal(ids, [index[c] for c in text])
    odd = CharTokenizer("zé\U0001F600a\n")
    assert odd.encode("a\U0001F600\nzé").tolist() == [3, 2, 4, 0, 1] and odd.encode("").tolist() == []
    with pytest.raises(UserError, match="outside the model's vocabulary: 'bq'"):
        odd.encode("zqab")


@pytest.mark.parametrize("override", ["model.top_p=0", "model.top_p=1.5", "model.temperature=-1", "model.top_k=-3"])
def test_sampling_settings_are_validated(override):
    with pytest.raises(UserError, match="expected temperature >= 0, 0 < top_p <= 1, top_k >= 0"):
        get_config("gpt-shakespeare-char-cpu", [override])


def test_resume_refuses_a_changed_corpus(tmp_path, capsys):
    from aigc_jax.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 40)
    wd = tmp_path / "run"
    argv = ["train", "gpt-shakespeare-char-cpu", "--workdir", str(wd), "--no-progress", "--set",
            f"data.name={corpus}", "--set", "model.layers=1", "--set", "model.width=16", "--set", "model.heads=2",
            "--set", "model.context=16", "--set", "data.batch_size=8", "--set", "train.num_eval_batches=1",
            "--set", "model.sample_tokens=4"]
    assert main([*argv, "--steps", "1"]) == 0
    corpus.write_text("To be, or not to be: that is the question!\n" * 40)  # new characters: another mapping
    capsys.readouterr()
    assert main([*argv, "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "no longer gives the tokenizer this run was trained with" in err and err.count("\n") == 1


def _jit_generate(model):
    return jax.jit(model.generate, static_argnums=(3,), static_argnames=("temperature", "use_cache"))


def test_padded_vocabulary_changes_no_loss_gradient_or_sample():
    """13 tokens padded to 16 embedding rows: with the first 13 rows equal to the unpadded model's (and junk in the
    rest), the loss, log p(x), the real rows' gradients and sampled tokens are those of the unpadded model; the
    padding rows get no gradient and their logits are -inf."""
    plain = GPT(dataclasses.replace(SMALL, vocab_multiple=1))
    padded = GPT(dataclasses.replace(SMALL, vocab_multiple=8))
    assert padded.config.padded_vocab == 16 and plain.config.padded_vocab == 13
    params, _ = plain.init(jax.random.key(0))
    junk = jax.random.normal(jax.random.key(9), (3, SMALL.width)) * 5.0
    params_p = {"gpt": {**params["gpt"], "wte": jnp.concatenate([params["gpt"]["wte"], junk])}}
    toks = jax.random.randint(jax.random.key(1), (4, SMALL.context + 1), 0, SMALL.vocab_size)
    batch = {"tokens": toks}

    def loss(model, p):
        return model.loss("gpt", p, {}, batch, None)[0]

    # Jitted: one compile each instead of op-by-op dispatch (4x the time of the test in eager mode).
    l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
    l2, g2 = jax.jit(jax.value_and_grad(lambda p: loss(padded, p)))(params_p)
    np.testing.assert_allclose(float(l2), float(l1), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(plain.log_prob)(params, batch), jax.jit(padded.log_prob)(params_p, batch),
                               rtol=1e-6)
    np.testing.assert_allclose(g2["gpt"]["wte"][:13], g1["gpt"]["wte"], atol=1e-7)
    assert not np.any(np.asarray(g2["gpt"]["wte"][13:]))
    rest = {k: v for k, v in g2["gpt"].items() if k != "wte"}
    assert tree_max_diff(rest, {k: v for k, v in g1["gpt"].items() if k != "wte"}) < 1e-6
    logits = jax.jit(padded.apply)(params_p, toks[:, :5])
    assert logits.shape == (4, 5, 16) and bool(jnp.all(logits[..., 13:] == -jnp.inf))
    prompt = toks[:2, :3]
    for use_cache in (True, False):
        a = _jit_generate(plain)(params, prompt, jax.random.key(5), 6, temperature=1.0, use_cache=use_cache)
        b = _jit_generate(padded)(params_p, prompt, jax.random.key(5), 6, temperature=1.0, use_cache=use_cache)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_config_written_before_vocab_padding_loads_unpadded():
    from aigc_jax.core import config as cfglib

    cfg = get_config("gpt-shakespeare-char-cpu")
    assert cfg.model.vocab_multiple == 128 and cfg.model.padded_vocab == 128
    stored = cfglib.to_dict(cfg)
    del stored["model"]["vocab_multiple"]
    old = cfglib.from_dict(type(cfg), stored, model_config_cls=type(cfg.model))
    assert old.model.vocab_multiple == 1 and old.model.padded_vocab == 65


def test_scanned_layers_compute_the_unrolled_model():
    """``scan_layers``: the same params stacked on a leading layers axis give the unrolled model's loss, gradients
    (stacked), KV-cache samples, and, with remat and dropout off, the same logits; the logical axes gain "layers"."""
    unrolled = GPT(dataclasses.replace(SMALL, layers=3))
    scanned = GPT(dataclasses.replace(SMALL, layers=3, scan_layers=True))
    scanned_remat = GPT(dataclasses.replace(SMALL, layers=3, scan_layers=True, remat=True))
    params, _ = unrolled.init(jax.random.key(0))
    blocks = params["gpt"]["blocks"]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(blocks[i] for i in range(3)))
    params_s = {"gpt": {**params["gpt"], "blocks": stacked}}
    assert jax.tree.structure(params_s) == jax.tree.structure(scanned.init(jax.random.key(1))[0])
    assert scanned.logical_axes()["gpt"]["blocks"]["wq"] == P("layers", "embed", "heads", "head_dim")
    toks = jax.random.randint(jax.random.key(1), (2, SMALL.context + 1), 0, SMALL.vocab_size)
    batch = {"tokens": toks}
    l1, g1 = jax.jit(jax.value_and_grad(lambda p: unrolled.loss("gpt", p, {}, batch, None)[0]))(params)
    for model in (scanned, scanned_remat):
        l2, g2 = jax.jit(jax.value_and_grad(lambda p, model=model: model.loss("gpt", p, {}, batch, None)[0]))(
            params_s)
        np.testing.assert_allclose(float(l2), float(l1), rtol=1e-6)
        g1_stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(g1["gpt"]["blocks"][i] for i in range(3)))
        assert tree_max_diff(g2["gpt"]["blocks"], g1_stacked) < 1e-6
    a = _jit_generate(unrolled)(params, toks[:, :2], jax.random.key(4), 5, temperature=1.0)
    b = _jit_generate(scanned)(params_s, toks[:, :2], jax.random.key(4), 5, temperature=1.0)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
