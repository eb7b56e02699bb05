"""A run stopped at step s and resumed reaches the same state at step T as an uninterrupted run, bitwise."""

import dataclasses
import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from aigc_jax.api import get_config, restore_run
from aigc_jax.core.errors import Interrupted, NonFiniteLossError
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


@pytest.mark.parametrize("sig, code, what", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "received SIGTERM")])
def test_a_signal_checkpoints_the_step_it_interrupts_and_resumes_exactly(tmp_path, monkeypatch, straight, sig, code,
                                                                         what):
    """Ctrl-C and a pre-emption's SIGTERM: the step in flight finishes and is checkpointed, the handlers are put
    back, the message is true, and the resumed run equals the uninterrupted one bitwise."""
    import os
    import signal

    from aigc_jax.parallel import mesh as meshlib

    cfg = _cfg(6)
    calls, to_global = [], meshlib.to_global

    def interrupt_at_the_third_batch(batch, sharding):  # after the iterator has moved, before the step ran
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), getattr(signal, sig))
        return to_global(batch, sharding)

    monkeypatch.setattr(meshlib, "to_global", interrupt_at_the_third_batch)
    with pytest.raises(Interrupted) as e:
        train(cfg, tmp_path / "sig", progress=False)
    monkeypatch.setattr(meshlib, "to_global", to_global)
    assert e.value.exit_code == code
    assert str(e.value) == f"{what} at step 3; checkpointed it: run the same command to resume"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers were put back
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert restore_run(tmp_path / "sig")[2] == 3
    assert train(cfg, tmp_path / "sig", progress=False)["start_step"] == 3
    assert tree_equal(straight, jax.device_get(restore_run(tmp_path / "sig")[1]))


def test_a_second_signal_stops_at_once_and_says_where_the_run_resumes(tmp_path, monkeypatch, straight):
    import os
    import signal

    from aigc_jax.parallel import mesh as meshlib

    calls, to_global = [], meshlib.to_global

    def interrupt_twice_at_the_fourth_batch(batch, sharding):
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return to_global(batch, sharding)

    monkeypatch.setattr(meshlib, "to_global", interrupt_twice_at_the_fourth_batch)
    with pytest.raises(Interrupted, match="interrupted twice: stopped at once after step 3; the run resumes from its "
                                          "last checkpoint, step 2"):
        train(_cfg(6), tmp_path / "twice", progress=False)
    monkeypatch.setattr(meshlib, "to_global", to_global)
    assert restore_run(tmp_path / "twice")[2] == 2
    train(_cfg(6), tmp_path / "twice", progress=False)
    assert tree_equal(straight, jax.device_get(restore_run(tmp_path / "twice")[1]))


def test_a_signal_before_the_first_step_says_nothing_was_checkpointed(tmp_path, monkeypatch):
    import os
    import signal

    from aigc_jax.train import loop

    build = loop.build_setup

    def signal_during_start_up(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return build(*a, **k)

    monkeypatch.setattr(loop, "build_setup", signal_during_start_up)
    with pytest.raises(Interrupted, match="^received SIGTERM before the first step; nothing new was checkpointed$"):
        train(_cfg(6), tmp_path / "early", progress=False)
    assert not (tmp_path / "early" / "checkpoints").exists() or not list((tmp_path / "early" / "checkpoints").iterdir())


def test_a_restart_from_scratch_drops_the_records_of_the_lost_run(tmp_path):
    """A run killed before its first checkpoint left records; training again writes each step once."""
    wd = tmp_path / "killed"
    wd.mkdir()
    train(_cfg(2, ["train.checkpoint_every=100"]), wd, progress=False, stop_at=1)  # checkpoints step 1 ...
    import shutil

    shutil.rmtree(wd / "checkpoints")  # ... which a kill -9 before it would not have left
    (wd / "checkpoints").mkdir()
    train(_cfg(2, ["train.checkpoint_every=100"]), wd, progress=False)
    records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]


def test_a_time_based_interval_checkpoints_between_the_periodic_ones(tmp_path):
    wd = tmp_path / "timed"
    train(_cfg(3, ["train.checkpoint_every=100", "train.checkpoint_every_secs=1e-9", "train.keep_checkpoints=5"]),
          wd, progress=False)
    assert sorted(ocp.CheckpointManager(wd / "checkpoints").all_steps()) == [1, 2, 3]


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
