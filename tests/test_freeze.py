"""Freezing parameters by path (`OptimConfig.freeze`, `aigc-jax train --freeze REGEX`): frozen leaves are
bit-identical after training and carry no optimizer state; a pattern that matches nothing is an error."""

import dataclasses

import jax
import numpy as np
import pytest

from aigc_jax.api import get_config
from aigc_jax.cli import _freeze_overrides
from aigc_jax.core import config as cfglib
from aigc_jax.core.errors import UserError
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.loop import _check_resumable
from aigc_jax.train.optim import param_path
from aigc_jax.train.setup import build_setup


def _paths(tree, player):
    return [param_path(player, p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def test_frozen_leaves_are_bit_identical_and_have_no_optimizer_state(devices):
    from aigc_jax.data import sources
    from aigc_jax.data.pipeline import train_iterator

    cfg = get_config("vae-mnist", ["players.vae.optim.freeze=vae/encoder/.*"], variant="tiny")
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    it = train_iterator(sources.for_experiment(cfg, "train", setup.model.spec), cfg.data, setup.examples_per_step)
    state = setup.init_state(0)
    before = jax.device_get(state["params"]["vae"])
    for _ in range(3):
        state, _ = setup.train_step(state, meshlib.to_global(next(it), setup.batch_sharding))
    after = jax.device_get(state["params"]["vae"])
    paths = _paths(before, "vae")
    frozen = [p.startswith("vae/encoder/") for p in paths]
    assert any(frozen) and not all(frozen)
    for is_frozen, a, b in zip(frozen, jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        assert np.array_equal(a, b) == is_frozen
    # Adam's moments exist for the trainable leaves only (the frozen ones are optax.MaskedNode).
    plain = build_setup(get_config("vae-mnist", variant="tiny"), meshlib.make_mesh("", devices[:1]))
    n_state = len(jax.tree.leaves(setup.abstract_state["opt_state"]))
    n_plain = len(jax.tree.leaves(plain.abstract_state["opt_state"]))
    assert n_plain - n_state == 2 * sum(frozen)  # mu and nu of each frozen leaf


def test_a_freeze_pattern_that_matches_nothing_or_is_not_a_regex_is_one_clear_error(devices):
    with pytest.raises(UserError, match=r"freeze='vae/encodr/.\*' matches no parameter of 'vae' \(paths look like"):
        build_setup(get_config("vae-mnist", ["players.vae.optim.freeze=vae/encodr/.*"], variant="tiny"),
                    meshlib.make_mesh("", devices[:1]))
    with pytest.raises(UserError, match="not a regular expression"):
        get_config("vae-mnist", ["players.vae.optim.freeze=vae/(("])


def test_the_cli_flag_freezes_the_players_it_matches():
    cfg = get_config("dcgan-mnist", variant="tiny")
    assert _freeze_overrides(cfg, "generator/convs/.*") == ["players.generator.optim.freeze=generator/convs/.*"]
    assert len(_freeze_overrides(cfg, ".*/convs/0/.*")) == 2
    with pytest.raises(UserError, match="--freeze 'gen/.\\*' matches no parameter"):
        _freeze_overrides(cfg, "gen/.*")


def test_a_run_saved_before_a_config_field_existed_resumes_with_its_default(tmp_path):
    cfg = get_config("vae-mnist", variant="tiny")
    stored = cfglib.to_dict(cfg)
    for p in stored["players"]:
        del p["optim"]["freeze"]
    _check_resumable(stored, cfg, tmp_path)  # no error: the missing field has the default
    frozen = dataclasses.replace(cfg, players=tuple(
        dataclasses.replace(p, optim=dataclasses.replace(p.optim, freeze="vae/encoder/.*")) for p in cfg.players))
    with pytest.raises(UserError, match="differs in players.vae.optim.freeze"):
        _check_resumable(stored, frozen, tmp_path)
