"""Checkpoint retention: the last K checkpoints and the best one by eval loss survive."""

import jax.numpy as jnp

from aigc_jax.checkpoint import Checkpointer


def test_keeps_last_k_and_the_best(tmp_path):
    ck = Checkpointer(tmp_path / "ck", keep=2)
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: None, 5: 3.0, 6: 2.5}
    for step, loss in losses.items():
        ck.save(step, {"w": jnp.full((3,), float(step))}, None, {"step": step}, eval_loss=loss)
    ck.wait()
    assert ck.all_steps() == [2, 5, 6]
    assert ck.read_config(2) == {"step": 2}
    ck.close()
