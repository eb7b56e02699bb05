"""The trainer's moving averages (``players.NAME.ema_decay``) and checkpoint averaging (`aigc-jax average`): the
average against its closed form, eval reporting it beside the raw weights, `aigc_jax.load` choosing either, and
the average of the last K checkpoints against their mean."""

import jax
import pytest

import aigc_jax
from aigc_jax.api import get_config, restore_run
from aigc_jax.cli import main
from aigc_jax.core.errors import UserError
from aigc_jax.data import sources
from aigc_jax.data.pipeline import train_iterator
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.loop import train
from aigc_jax.train.setup import build_setup
from tests.helpers import tree_max_diff


def test_the_moving_average_is_its_closed_form(devices):
    """avg_T = (prod_t d_t) p_0 + sum_t (1 - d_t) (prod_{s>t} d_s) p_t, with d_t = min(decay, (1 + t) / (10 + t)):
    decay 0.2 takes the warm-up value at t = 1 (2/11) and the decay after."""
    cfg = get_config("vae-mnist", ["players.vae.ema_decay=0.2"], variant="tiny")
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    state = setup.init_state(0)
    raw = [jax.device_get(state["params"]["vae"])]
    for _ in range(3):
        state, _ = setup.train_step(state, meshlib.to_global(next(it), setup.batch_sharding))
        raw.append(jax.device_get(state["params"]["vae"]))
    d = [min(0.2, (1 + t) / (10 + t)) for t in (1, 2, 3)]
    weights = [d[0] * d[1] * d[2], (1 - d[0]) * d[1] * d[2], (1 - d[1]) * d[2], 1 - d[2]]
    assert abs(sum(weights) - 1) < 1e-12
    expected = jax.tree.map(lambda *ps: sum(w * p for w, p in zip(weights, ps, strict=True)), *raw)
    assert int(state["ema"]["vae"]["count"]) == 3
    assert tree_max_diff(jax.device_get(state["ema"]["vae"]["params"]), expected) < 1e-6
    assert tree_max_diff(raw[-1], expected) > 1e-5  # the average is not the last weights (100x the tolerance)


def test_eval_load_and_checkpoint_averaging(tmp_path, capsys):
    over = ["players.vae.ema_decay=0.5", "train.steps=4", "train.checkpoint_every=1", "train.keep_checkpoints=3",
            "train.eval_every=0", "train.sample_every=0", "train.num_eval_batches=1", "train.sample_weights=ema"]
    run = tmp_path / "run"
    summary = train(get_config("vae-mnist", over, variant="tiny"), run, progress=False)
    ev = summary["eval"]
    assert {"loss", "ema_loss"} <= set(ev) and ev["loss"] != ev["ema_loss"]
    _, state, step = restore_run(run)
    state = jax.device_get(state)
    assert step == 4
    ema = aigc_jax.load(run)  # train.sample_weights=ema: the average by default
    assert tree_max_diff(ema.params["vae"], state["ema"]["vae"]["params"]) == 0
    assert tree_max_diff(aigc_jax.load(run, weights="raw").params["vae"], state["params"]["vae"]) == 0
    with pytest.raises(UserError, match="weights='best': expected 'raw' or 'ema'"):
        aigc_jax.load(run, weights="best")

    assert main(["average", str(run), "--last", "2", "--out", str(tmp_path / "avg")]) == 0
    states = [jax.device_get(restore_run(run, step=s)[1]) for s in (3, 4)]
    mean = jax.tree.map(lambda a, b: (a + b) / 2, states[0]["params"], states[1]["params"])
    averaged = aigc_jax.load(tmp_path / "avg", weights="raw")
    assert averaged.step == 4 and tree_max_diff(averaged.params, mean) < 1e-6
    ema_mean = jax.tree.map(lambda a, b: (a + b) / 2, states[0]["ema"]["vae"]["params"],
                            states[1]["ema"]["vae"]["params"])
    assert tree_max_diff(aigc_jax.load(tmp_path / "avg").params["vae"], ema_mean) < 1e-6
    capsys.readouterr()
    # What a user can get wrong: one line each, and nothing overwritten.
    for argv, message in [
        (["average", str(run), "--last", "5", "--out", str(tmp_path / "x")], "--last 5: "),
        (["average", str(run), "--last", "2", "--out", str(tmp_path / "avg")], "exists and is not an empty"),
        (["average", str(run), "--last", "0", "--out", str(tmp_path / "x")], "--last 0: expected a positive"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avg", "run"]  # no partial directory left behind
    assert main(["train", "vae-mnist", "--workdir", str(tmp_path / "avg"), "--steps", "6"]) == 2
    assert "holds an average of checkpoints" in capsys.readouterr().err


def test_moving_average_settings_are_checked():
    with pytest.raises(UserError, match=r"players.vae.ema_decay: expected 0 \(no average\) or a decay in \(0, 1\)"):
        get_config("vae-mnist", ["players.vae.ema_decay=1.0"])
    with pytest.raises(UserError, match="train.sample_weights=ema needs a moving average"):
        get_config("vae-mnist", ["train.sample_weights=ema"])
