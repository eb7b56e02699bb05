"""Checkpoint retention (the last K checkpoints and the best one by eval loss survive) and the per-array checksums."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aigc_jax.checkpoint import Checkpointer
from aigc_jax.checkpoint.manager import checksums


def test_keeps_last_k_and_the_best(tmp_path):
    ck = Checkpointer(tmp_path / "ck", keep=2)
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: None, 5: 3.0, 6: 2.5}
    for step, loss in losses.items():
        ck.save(step, {"w": jnp.full((3,), float(step))}, None, {"step": step}, eval_loss=loss)
    ck.wait()
    assert ck.all_steps() == [2, 5, 6]
    assert ck.read_config(2) == {"step": 2}
    ck.close()


def _numpy_checksum(x: np.ndarray) -> int:
    u = x.reshape(-1).view({1: np.uint8, 2: np.uint16, 4: np.uint32}[x.dtype.itemsize]).astype(np.uint64)
    w = np.arange(u.size, dtype=np.uint64) * 2 + 1
    return int(np.sum((u * w) % 2**32) % 2**32)


def test_checksums_are_the_closed_form_whatever_the_sharding_and_see_every_flipped_bit(devices):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 37)).astype(np.float32)
    state = {"w": jnp.asarray(x), "b": jnp.asarray(x[0].astype(jnp.bfloat16)), "n": jnp.arange(5, dtype=jnp.int32),
             "k": jnp.asarray(rng.integers(0, 2**32, 2, dtype=np.uint32)), "f": jnp.asarray(True)}
    got = checksums(state)
    assert got["['w']"] == _numpy_checksum(x)
    assert got["['b']"] == _numpy_checksum(np.asarray(state["b"]))
    assert got["['n']"] == _numpy_checksum(np.arange(5, dtype=np.int32))
    assert got["['f']"] == 1
    mesh = Mesh(np.array(devices), ("d",))
    sharded = jax.device_put(state["w"], NamedSharding(mesh, P("d")))
    assert checksums({"w": sharded})["['w']"] == got["['w']"]
    bits = x.view(np.uint32).copy()
    for i, b in [(0, 0), (17, 31), (295, 12), (100, 23)]:
        flipped = bits.copy()
        flipped.reshape(-1)[i] ^= np.uint32(1 << b)
        assert checksums({"w": jnp.asarray(flipped.view(np.float32))})["['w']"] != got["['w']"]
