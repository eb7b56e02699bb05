"""A run stopped at step s and resumed reaches the same state at step T as an uninterrupted run, bitwise."""

import dataclasses
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aigc_jax.api import get_config, restore_run
from aigc_jax.core.errors import NonFiniteLossError
from aigc_jax.train.loop import train
from tests.helpers import tree_equal


def _cfg(steps=6, extra=()):
    cfg = get_config("vae-mnist", ["train.checkpoint_every=2", "train.log_every=1", *extra], variant="tiny")
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted 6-step run that the interrupted ones must equal."""
    wd = tmp_path_factory.mktemp("straight") / "run"
    train(_cfg(6), wd, progress=False)
    return jax.device_get(restore_run(wd)[1])


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path, straight):
    cfg = _cfg(6)
    train(cfg, tmp_path / "resumed", progress=False, stop_at=3)  # stop mid-interval (last checkpoint: 3)
    _, mid, step = restore_run(tmp_path / "resumed")
    assert step == 3
    log = tmp_path / "resumed" / "metrics.jsonl"
    with open(log, "a") as f:  # as if the run had logged steps 4-5 and crashed mid-line before checkpointing
        f.write('{"kind": "train", "step": 4, "loss": 1.0}\n{"kind": "train", "step": 5, "loss": 1.0}\n{"kind": "tr')
    summary = train(cfg, tmp_path / "resumed", progress=False)
    assert summary["start_step"] == 3
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] != 1.0 for r in records if r["kind"] == "train")
    _, b, sb = restore_run(tmp_path / "resumed")
    assert sb == 6
    assert tree_equal(straight, jax.device_get(b))
    assert not tree_equal(jax.device_get(mid["params"]), jax.device_get(b["params"]))


def test_ctrl_c_checkpoints_the_step_it_interrupts_and_resumes_exactly(tmp_path, monkeypatch, straight):
    import os
    import signal

    from aigc_jax.parallel import mesh as meshlib

    cfg = _cfg(6)
    calls, to_global = [], meshlib.to_global

    def interrupt_at_the_third_batch(batch, sharding):  # after the iterator has moved, before the step ran
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return to_global(batch, sharding)

    monkeypatch.setattr(meshlib, "to_global", interrupt_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "ctrlc", progress=False)
    monkeypatch.setattr(meshlib, "to_global", to_global)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler was put back
    assert restore_run(tmp_path / "ctrlc")[2] == 3
    assert train(cfg, tmp_path / "ctrlc", progress=False)["start_step"] == 3
    assert tree_equal(straight, jax.device_get(restore_run(tmp_path / "ctrlc")[1]))


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
