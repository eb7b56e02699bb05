"""Test environment: 8 simulated CPU devices, strict rank promotion, small compile caches per test."""

import os

# Must happen before JAX is imported anywhere.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 8, "tests expect 8 simulated CPU devices"
    return devs


@pytest.fixture
def one_device_mesh(devices):
    from aigc_jax.parallel import make_mesh

    return make_mesh("", devices[:1])
