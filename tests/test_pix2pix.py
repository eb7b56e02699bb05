"""pix2pix numerics: the paired tasks, the U-Net, the objective, player isolation, the baselines, the CLI."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from aigc_jax.cli import main
from aigc_jax.core.registry import build_model, get_config
from aigc_jax.data.pipeline import make_device_transform
from aigc_jax.models.gan import pix2pix
from aigc_jax.train.optim import make_optimizers
from aigc_jax.train.step import build_train_step, init_state
from tests.helpers import png, png_size, tree_equal


def _model(name="pix2pix-mnist"):
    cfg = get_config(name, "tiny")
    return cfg, build_model(cfg)


def _targets(shape, n=4, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, *shape), jnp.float32)


def test_make_input_upsample4_is_the_block_mean_repeated():
    # One 8x8 image: block (r, c) holds 16 values whose mean is known.
    y = np.zeros((1, 8, 8, 1), np.float32)
    y[0, :4, :4, 0] = np.arange(16).reshape(4, 4) / 100.0  # mean 0.075
    y[0, :4, 4:, 0] = 1.0
    y[0, 4:, :4, 0] = np.tile([0.0, 0.4], (4, 2))  # mean 0.2
    y[0, 4:, 4:, 0] = 0.5
    x = np.asarray(pix2pix.make_input(jnp.asarray(y), "upsample4"))
    expected = np.kron(np.array([[0.075, 1.0], [0.2, 0.5]], np.float32), np.ones((4, 4), np.float32))
    np.testing.assert_allclose(x[0, ..., 0], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(pix2pix.area_downsample(jnp.asarray(y))[0, ..., 0], [[0.075, 1.0], [0.2, 0.5]],
                               rtol=1e-6)


def test_make_input_colorize_is_bt601_luminance():
    y = jnp.asarray([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [0.5, 0.25, 1.0]]]])  # [1, 2, 2, 3]
    x = np.asarray(pix2pix.make_input(y, "colorize"))
    assert x.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(x[0, ..., 0], [[0.299, 0.587], [0.114, 0.5 * 0.299 + 0.25 * 0.587 + 0.114]],
                               rtol=1e-6)


def test_unet_shape_skip_connection_and_per_example_outputs():
    cfg, model = _model()
    params, state = model.init(jax.random.key(0))
    g, stats = params["generator"], state["g_stats"]
    x = _targets((28, 28, 1), n=3)
    def generate(xx):
        return model.generate(g, stats, xx, train=False)[0]

    out = generate(x)
    assert out.shape == (3, 28, 28, 1)
    # The outermost decoder stage reads its input concatenated with the first encoder stage's features (the skip).
    c0 = cfg.model.g_channels[0]
    assert g["up"][0]["kernel"].shape == (3, 3, 2 * c0, 4 * 1)

    grad = np.asarray(jax.grad(lambda xx: generate(xx)[0, 13, 17, 0])(x))
    assert grad[0, 13, 17, 0] != 0.0  # the output at a pixel depends on the input there
    assert np.all(grad[1:] == 0.0)  # running statistics at test time: no dependence on the other examples
    # ... and the same image in another batch gives the same output.
    other = generate(jnp.concatenate([x[:1], _targets((28, 28, 1), n=2, seed=5)]))
    np.testing.assert_allclose(np.asarray(other[0]), np.asarray(out[0]), rtol=1e-5, atol=1e-6)


def test_generator_loss_is_gan_term_plus_100_l1():
    cfg, model = _model()
    assert cfg.model.l1_weight == 100.0
    params, state = model.init(jax.random.key(1))
    target = _targets((28, 28, 1), n=4, seed=2)
    key = jax.random.key(3)
    loss, (metrics, new_state) = model.loss("generator", params, state, {"image": target}, key)
    # The model's own outputs, combined by hand in float64.
    x = pix2pix.make_input(target, "upsample4")
    fake, _ = model.generate(params["generator"], state["g_stats"], x, train=True, dropout_key=key)
    logits = np.asarray(model.discriminate(params["discriminator"], x, fake), np.float64)
    gan = np.mean(np.log1p(np.exp(-logits)))  # non-saturating: -log sigmoid(D(x, G(x))), over every patch
    l1 = np.mean(np.abs(np.asarray(fake, np.float64) - (2.0 * np.asarray(target, np.float64) - 1.0)))
    np.testing.assert_allclose(float(loss), gan + 100.0 * l1, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["l1"]), l1, rtol=1e-5)
    assert not tree_equal(new_state["g_stats"], state["g_stats"])  # training updates the running statistics


def test_a_discriminator_update_leaves_the_generator_bit_identical():
    cfg, model = _model()
    opts = make_optimizers(cfg)
    transform = make_device_transform(cfg.data)
    state = init_state(model, opts, jax.random.key(0))
    batch = {"image": np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)}
    step = jax.jit(build_train_step(model, opts, (("discriminator", 1),), transform))
    new, _ = step(state, batch)
    assert tree_equal(new["params"]["generator"], state["params"]["generator"])
    assert tree_equal(new["opt_state"]["generator"], state["opt_state"]["generator"])
    assert tree_equal(new["model_state"], state["model_state"])  # G's running statistics too
    assert not tree_equal(new["params"]["discriminator"], state["params"]["discriminator"])


def test_baseline_metrics_match_an_independent_computation():
    _, model = _model()
    params, state = model.init(jax.random.key(0))
    target = np.asarray(_targets((28, 28, 1), n=3, seed=4))
    m = model.eval_metrics(params, state, {"image": jnp.asarray(target)}, jax.random.key(1))
    low = target.reshape(3, 7, 4, 7, 4, 1).mean(axis=(2, 4))
    bicubic = np.clip(np.asarray(jax.image.resize(low, (3, 28, 28, 1), method="bicubic")), 0.0, 1.0)
    np.testing.assert_allclose(np.asarray(m["l1_bicubic"]), np.abs(bicubic - target).mean(axis=(1, 2, 3)),
                               rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(m["loss"]), np.asarray(m["l1"]))
    assert m["l1"].shape == (3,)

    # colorize's reference: the BT.601 gray in every channel.
    target = np.asarray(_targets((32, 32, 3), n=2, seed=6))
    gray = target @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(np.asarray(pix2pix.baseline(jnp.asarray(target), "colorize")),
                               np.repeat(gray[..., None], 3, axis=-1), rtol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from aigc_jax.train.loop import train

    wd = tmp_path_factory.mktemp("p2p") / "run"
    cfg = get_config("pix2pix-mnist", "tiny")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=2, num_samples=8))
    summary = train(cfg, wd, progress=False, async_checkpoints=False)
    assert np.isfinite(summary["eval"]["l1"]) and np.isfinite(summary["eval"]["l1_bicubic"])
    return wd


def test_training_grid_and_cli_sample(trained, tmp_path, capsys):
    # The trainer's grid: 8 test examples as input | output | target, 2 examples per row -> 6 columns, 4 rows.
    grid = png(trained / "samples" / "step_2.png")
    assert grid.size == ((6 * 30 + 2) * 2, (4 * 30 + 2) * 2)
    out = tmp_path / "split.png"
    assert main(["sample", str(trained), "--num", "2", "--out", str(out)]) == 0
    assert png_size(out) == ((3 * 30 + 2) * 2, (2 * 30 + 2) * 2)
    low = tmp_path / "low.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (7, 7), dtype=np.uint8)).save(low)
    assert main(["sample", str(trained), "--input", str(low), "--out", str(out)]) == 0
    assert png_size(out) == ((2 * 30 + 2) * 2, (1 * 30 + 2) * 2)  # input | output
    capsys.readouterr()
    # `eval`: the test L1 and the bicubic baseline; no noise-sample metrics (they need inputs).
    assert main(["eval", str(trained), "--num-samples", "16", "--no-progress"]) == 0
    res = json.loads((trained / "eval.json").read_text())
    assert np.isfinite(res["test_l1"]) and np.isfinite(res["test_l1_bicubic"])
    capsys.readouterr()
    assert main(["eval", str(trained), "--metrics", "fid", "--no-progress"]) == 2
    assert "--metrics: fid not available for pix2pix-mnist" in capsys.readouterr().err


@pytest.mark.parametrize("make, message", [
    (lambda p: Image.new("L", (10, 10)).save(p / "x.png") or p / "x.png", "must be 7x7 (low resolution) or 28x28"),
    (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "expected a .png, .jpg/.jpeg or .npz"),
    (lambda p: np.savez(p / "x.npz", y=np.zeros((2, 7, 7))) or p / "x.npz", "no array 'x'"),
    (lambda p: np.savez(p / "x.npz", x=np.full((2, 7, 7), 2.0)) or p / "x.npz", "must lie in [0, 1]"),
    (lambda p: p / "missing.png", "no such file"),
])
def test_cli_input_errors_are_one_line(trained, tmp_path, capsys, make, message):
    path = make(tmp_path)
    assert main(["sample", str(trained), "--input", str(path), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert message in err, err


def test_cifar10_subset_is_embedded_and_verified():
    from aigc_jax.data import embedded, sources

    train, test = sources.get_source("cifar10-subset", "train"), sources.get_source("cifar10-subset", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert train.images.dtype == np.uint8 and train.image_shape == (32, 32, 3)
    assert train.labels.dtype == np.int32 and set(np.unique(test.labels)) == set(range(10))
    # A user's copy of the same file works through data.path.
    copy = sources.get_source("cifar10-subset", "test", str(embedded.verified(sources.CIFAR10_SUBSET)))
    np.testing.assert_array_equal(copy.images, test.images)


def test_read_images_scales_16_bit_png_by_its_own_range(tmp_path):
    from aigc_jax.data.images import read_images

    ramp = np.linspace(0, 65535, 49).astype(np.uint16).reshape(7, 7)
    Image.fromarray(ramp).save(tmp_path / "x16.png")
    Image.fromarray((ramp // 257).astype(np.uint8)).save(tmp_path / "x8.png")
    x16, x8 = read_images(str(tmp_path / "x16.png")), read_images(str(tmp_path / "x8.png"))
    assert x16.shape == x8.shape == (1, 7, 7, 1)
    np.testing.assert_allclose(x16[0, ..., 0], ramp / 65535.0, rtol=1e-6)
    np.testing.assert_allclose(x16, x8, atol=1 / 255)
