"""The public Python API: `aigc_jax.load` gives plain pytrees and pure functions that jit/vmap/grad accept."""

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aigc_jax
from aigc_jax import api
from aigc_jax.api import get_config

REPO = Path(__file__).resolve().parent.parent


def test_the_public_api_is_explicit():
    assert sorted(aigc_jax.__all__) == sorted([
        "LoadedModel", "UserError", "create", "evaluate", "get_config", "list_models", "load", "read_tokenizer",
        "sample", "sample_text", "train", "translate_images"])
    for name in aigc_jax.__all__:
        if name != "UserError":
            assert getattr(aigc_jax, name) is getattr(api, name), name
    namespace: dict = {}
    exec("from aigc_jax import *", namespace)  # noqa: S102
    assert set(namespace) - {"__builtins__"} == set(aigc_jax.__all__)


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("api") / "cvae"
    cfg = get_config("cvae-mnist", ["train.steps=3", "train.checkpoint_every=3"], variant="tiny")
    summary = aigc_jax.train(cfg, wd, progress=False)
    assert summary["step"] == 3
    return wd


def test_load_gives_plain_pytrees_and_pure_functions(cvae_run):
    gen = aigc_jax.load(cvae_run)
    assert gen.step == 3
    assert isinstance(gen.params, dict) and isinstance(gen.params["vae"], dict)
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(gen.params))

    sample = jax.jit(gen.sample_fn, static_argnums=2)
    imgs = sample(gen.params, jax.random.key(0), 5, label=3)
    assert imgs.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(imgs, gen.sample_fn(gen.params, jax.random.key(0), 5, label=3), atol=1e-6)

    keys = jax.random.split(jax.random.key(1), 4)
    per_key = jax.vmap(lambda k: gen.sample_fn(gen.params, k, 2, label=jnp.array([1, 2])))(keys)
    assert per_key.shape == (4, 2, 28, 28, 1)
    np.testing.assert_allclose(per_key[2], gen.sample_fn(gen.params, keys[2], 2, label=jnp.array([1, 2])),
                               atol=1e-5)

    mean, logvar = gen.encode(gen.params, imgs, jnp.full((5,), 3))
    assert mean.shape == logvar.shape == (5, gen.config.model.latent_dim)
    recon = gen.decode(gen.params, mean, jnp.full((5,), 3))
    assert recon.shape == imgs.shape

    def pixel_mass(p):
        return jnp.sum(gen.decode(p, mean, jnp.full((5,), 3)))

    grads = jax.grad(pixel_mass)(gen.params)
    assert jax.tree.structure(grads) == jax.tree.structure(gen.params)
    assert any(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))


def test_labels_change_the_samples(cvae_run):
    gen = aigc_jax.load(cvae_run)
    a = gen.sample_fn(gen.params, jax.random.key(0), 3, label=1)
    b = gen.sample_fn(gen.params, jax.random.key(0), 3, label=7)
    assert not np.allclose(a, b)


def test_list_models_counts_parameters():
    rows = {r["name"]: r for r in aigc_jax.list_models()}
    # 784-500-500-50 MLP VAE: encoder 784*500+500 + 500*500+500 + 500*100+100, decoder mirrored to 784.
    enc = 784 * 500 + 500 + 500 * 500 + 500 + 500 * 100 + 100
    dec = 50 * 500 + 500 + 500 * 500 + 500 + 500 * 784 + 784
    assert rows["vae-mnist"]["params"] == enc + dec
    assert rows["vae-mnist"]["family"] == "vae" and rows["vae-mnist"]["dataset"] == "mnist"


def test_readme_is_a_front_page_and_its_table_matches_the_json():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "results_table.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "tpu_compile.py"), "table", "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "benchmarks.pipeline_table", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-m", "benchmarks.speed_table", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
