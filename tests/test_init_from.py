"""Starting a run from another run's weights by path (`--init-from RUN[@STEP]`): shared paths are copied,
new ones keep their fresh initialisation and are listed, shape mismatches are one error naming the paths, the
optimizer starts fresh, and the new run records where it came from."""

import hashlib
import json

import jax
import numpy as np
import pytest

from aigc_jax.api import get_config, restore_run
from aigc_jax.cli import main
from aigc_jax.core.errors import UserError
from aigc_jax.train.init_from import parse_source
from aigc_jax.train.loop import train
from aigc_jax.train.optim import param_path
from tests.helpers import tree_equal


def _flat(tree, player):
    return {param_path(player, p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    wd = tmp_path_factory.mktemp("init") / "src"
    train(get_config("vae-mnist", ["train.steps=2", "train.checkpoint_every=1"], variant="tiny"), wd,
          progress=False)
    return wd


def test_shared_paths_are_copied_new_ones_stay_fresh_and_the_optimizer_is_fresh(source, devices):
    from aigc_jax.parallel import mesh as meshlib
    from aigc_jax.train.init_from import initialise_from
    from aigc_jax.train.setup import build_setup

    cfg = get_config("vae-mnist", ["model.hidden=32,32"], variant="tiny")
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    fresh = setup.init_state(0)
    new, record = initialise_from(setup, fresh, f"{source}@1")
    assert record["step"] == 1
    assert record["config_sha256"] == hashlib.sha256((source / "config.json").read_bytes()).hexdigest()
    assert sorted(record["fresh"]) == ["vae/decoder/layers/1/bias", "vae/decoder/layers/1/kernel",
                                       "vae/encoder/layers/1/bias", "vae/encoder/layers/1/kernel"]
    src = _flat(jax.device_get(restore_run(source, step=1)[1]["params"]["vae"]), "vae")
    got = _flat(jax.device_get(new["params"]["vae"]), "vae")
    init = _flat(jax.device_get(fresh["params"]["vae"]), "vae")
    for path in got:
        np.testing.assert_array_equal(got[path], init[path] if path in record["fresh"] else src[path])
    assert record["restored"] == len(got) - 4 and record["dropped"] == []
    assert tree_equal(jax.device_get(new["opt_state"]), jax.device_get(fresh["opt_state"]))


def test_a_run_started_from_another_records_it_and_resumes_like_any_run(source, tmp_path):
    wd = tmp_path / "deeper"
    overrides = ["model.hidden=32,32", f"train.init_from={source}@1", "train.checkpoint_every=1"]
    train(get_config("vae-mnist", ["train.steps=1", *overrides], variant="tiny"), wd, progress=False)
    record = json.loads((wd / "config.json").read_text())["init_from"]
    assert record["run"] == str(source.resolve()) and record["step"] == 1 and len(record["fresh"]) == 4
    summary = train(get_config("vae-mnist", ["train.steps=2", *overrides], variant="tiny"), wd, progress=False)
    assert summary["start_step"] == 1 and restore_run(wd)[2] == 2


def test_a_shape_mismatch_names_the_paths(source, tmp_path, capsys):
    rc = main(["train", "vae-mnist", "--workdir", str(tmp_path / "w"), "--set", "model.hidden=48",
               "--set", f"train.init_from={source}", "--set", "data.batch_size=16", "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert "have another shape or dtype in the new model (vae/decoder/layers/0/bias (32,) -> (48,)" in err
    assert not (tmp_path / "w").exists()  # a start that failed leaves no directory behind
    assert main(["train", "vae-mnist", "--workdir", str(tmp_path / "w"), "--init-from", f"{source}@7",
                 "--steps", "2", "--no-progress"]) == 2
    assert "has no checkpoint at step 7 (it has [1, 2])" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_source_spec_parsing():
    assert parse_source("runs/a@200") == (parse_source("runs/a")[0], 200)
    assert parse_source("runs/a")[1] is None
    with pytest.raises(UserError, match="RUN_DIR@STEP"):
        parse_source("runs/a@last")
