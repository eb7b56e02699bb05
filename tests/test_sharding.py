"""The same step on 1 device, data=8 and data=4,fsdp=2 (8 simulated CPU devices)."""

import jax
import numpy as np
import pytest

from aigc_jax.core.errors import UserError
from aigc_jax.core.registry import get_config
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.setup import build_setup
from tests.helpers import tree_max_diff


@pytest.fixture(scope="module")
def reference(devices):
    cfg = get_config("vae-mnist", "tiny")
    src = sources.get_source("mnist", "train")
    it = train_iterator(src, cfg.data, cfg.data.batch_size)
    batches = [next(it) for _ in range(2)]
    return cfg, batches, _run(cfg, batches, meshlib.make_mesh("", devices[:1]))


def _run(cfg, batches, mesh):
    setup = build_setup(cfg, mesh)
    state = setup.init_state(0)
    losses = []
    for b in batches:
        state, m = setup.train_step(state, meshlib.to_global(b, setup.batch_sharding))
        losses.append(float(m["loss"]))
    return setup, state, losses


@pytest.mark.parametrize("spec", ["data=8", "data=4,fsdp=2", "data=2,fsdp=4"])
def test_sharded_step_equals_single_device(reference, devices, spec):
    cfg, batches, (_, ref_state, ref_losses) = reference
    setup, state, losses = _run(cfg, batches, meshlib.make_mesh(spec, devices))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert tree_max_diff(jax.device_get(state["params"]), jax.device_get(ref_state["params"])) < 1e-5
    assert tree_max_diff(jax.device_get(state["opt_state"]), jax.device_get(ref_state["opt_state"])) < 1e-5


def test_pixelcnn_per_device_gradient_step_equals_single_device(devices):
    """PixelCNN's loss is a per-image mean, so on a batch-only mesh it takes the flat per-device reduction; two
    steps (the step's dynamic binarization included) give the single-device losses and parameters."""
    cfg = get_config("pixelcnn-mnist", "tiny")
    it = train_iterator(sources.get_source(cfg.data.name, "train"), cfg.data, cfg.data.batch_size)
    batches = [next(it) for _ in range(2)]
    one, one_state, one_losses = _run(cfg, batches, meshlib.make_mesh("", devices[:1]))
    four, state, losses = _run(cfg, batches, meshlib.make_mesh("data=4", devices[:4]))
    assert four.per_device_gradients and not one.per_device_gradients
    np.testing.assert_allclose(losses, one_losses, rtol=1e-6)
    assert tree_max_diff(jax.device_get(state["params"]), jax.device_get(one_state["params"])) < 1e-6


def test_fsdp_actually_shards_params(devices):
    cfg = get_config("vae-mnist", "tiny")
    setup = build_setup(cfg, meshlib.make_mesh("data=4,fsdp=2", devices))
    state = setup.init_state(0)
    kernel = state["params"]["vae"]["encoder"]["layers"][0]["kernel"]  # [784, 32]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)
    assert kernel.addressable_shards[0].data.shape == (392, 32)
    # Adam's moments follow their parameter's sharding; the step count stays replicated.
    leaves = jax.tree_util.tree_flatten_with_path(state["opt_state"]["vae"])[0]
    moments = [x for p, x in leaves if x.shape == (784, 32)]
    assert len(moments) == 2 and all(m.sharding.spec == kernel.sharding.spec for m in moments)
    # Every parameter of at least 4096 elements is split over fsdp.
    for path, x in jax.tree_util.tree_flatten_with_path(state["params"])[0]:
        if x.size >= meshlib.MIN_SHARD_SIZE:
            assert "fsdp" in tuple(x.sharding.spec), path


def test_mesh_errors(devices):
    with pytest.raises(UserError, match="uses 6 devices but 8 are available"):
        meshlib.parse_mesh("data=3,fsdp=2", 8)
    with pytest.raises(UserError, match="AXIS one of data, fsdp, tensor"):
        meshlib.parse_mesh("model=8", 8)
    assert meshlib.parse_mesh("fsdp=2", 8) == {"data": 4, "fsdp": 2, "tensor": 1}
    from aigc_jax.api import get_config as api_config

    with pytest.raises(UserError, match=r"data.batch_size=12 cannot be split .* use a multiple of 8"):
        build_setup(api_config("vae-mnist", ["data.batch_size=12"]), meshlib.make_mesh("", devices))
    build_setup(api_config("vae-mnist", ["data.batch_size=12"]), meshlib.make_mesh("", devices), for_training=False)
    with pytest.raises(UserError, match="vae has no tensor-parallel layout"):
        build_setup(get_config("vae-mnist", "tiny"), meshlib.make_mesh("data=4,tensor=2", devices))


def test_moving_average_generator_is_sharded_like_the_generator(devices):
    setup = build_setup(get_config("dcgan-mnist"), meshlib.make_mesh("data=4,fsdp=2", devices))
    params, ema = setup.state_shardings["params"]["generator"], setup.state_shardings["model_state"]["ema"]
    assert jax.tree.structure(params) == jax.tree.structure(ema)
    specs = [(p.spec, e.spec) for p, e in zip(jax.tree.leaves(params), jax.tree.leaves(ema), strict=True)]
    assert all(p == e for p, e in specs) and any("fsdp" in tuple(p) for p, _ in specs)


def test_in_flight_keeps_the_host_at_most_depth_programs_ahead(devices):
    """The trainer's pacing (see `meshlib.InFlight`): after each push, everything but the newest ``depth`` outputs
    has finished."""
    mesh = meshlib.make_mesh("", devices[:2])
    step = jax.jit(lambda x: 0.5 * x + x.mean(), out_shardings=meshlib.batch_sharding(mesh))  # an all-reduce
    x = jax.device_put(np.ones((2, 256), np.float32), meshlib.batch_sharding(mesh))
    in_flight, outs = meshlib.InFlight(depth=2), []
    for _ in range(6):
        x = step(x)
        outs.append(x)
        in_flight.push(x)
        assert all(o.is_ready() for o in outs[:-2]) and len(in_flight._pending) <= 2
    np.testing.assert_allclose(np.asarray(x), 1.5**6)
