"""A run stopped at step s and resumed reaches the same state at step T as an uninterrupted run, bitwise."""

import dataclasses

import jax
import numpy as np
import orbax.checkpoint as ocp

from aigc_jax.api import get_config, restore_run
from aigc_jax.core.errors import NonFiniteLossError
from aigc_jax.train.loop import train
from tests.helpers import tree_equal


def _cfg(steps=6, extra=()):
    cfg = get_config("vae-mnist", ["train.checkpoint_every=2", "train.log_every=1", *extra], variant="tiny")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    cfg = _cfg(6)
    train(cfg, tmp_path / "straight", progress=False)
    train(cfg, tmp_path / "resumed", progress=False, stop_at=3)  # stop mid-interval (last checkpoint: 3)
    _, mid, step = restore_run(tmp_path / "resumed")
    assert step == 3
    summary = train(cfg, tmp_path / "resumed", progress=False)
    assert summary["start_step"] == 3
    _, a, sa = restore_run(tmp_path / "straight")
    _, b, sb = restore_run(tmp_path / "resumed")
    assert sa == sb == 6
    assert tree_equal(jax.device_get(a), jax.device_get(b))
    assert not tree_equal(jax.device_get(mid["params"]), jax.device_get(b["params"]))


def test_nan_loss_stops_the_run_and_is_never_checkpointed(tmp_path):
    cfg = _cfg(6, ["players.vae.optim.lr=1e30", "players.vae.optim.schedule=constant", "train.checkpoint_every=1"])
    try:
        train(cfg, tmp_path / "nan", progress=False)
    except NonFiniteLossError as e:
        assert "loss became NaN/Inf at step 2" in str(e)
    else:
        raise AssertionError("a diverging run was not stopped")
    steps = ocp.CheckpointManager(tmp_path / "nan" / "checkpoints").all_steps()
    assert max(steps) == 1
    _, state, _ = restore_run(tmp_path / "nan")
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(state["params"])))
