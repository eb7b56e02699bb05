"""Start a run from another run's weights (``train.init_from = "RUN_DIR[@STEP]"``, ``--init-from``).

Parameters and model state are matched by path (player, then pytree keys, as `optim.param_path` names them):
a path both runs have is copied when its shape and dtype agree and is an error naming the paths when they do not;
a path only the new model has (a new label embedding, a new head) keeps its fresh initialisation and is listed;
a path only the source has is dropped and listed. The optimizer state is the new run's fresh one. What was done
goes into the new run's ``config.json`` under ``init_from`` (source, step, the SHA-256 of the source's
config.json, the fresh and the dropped paths), so that a number can be traced to its pretraining.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jax
import numpy as np

from aigc_jax.core.errors import UserError
from aigc_jax.train.optim import param_path, param_paths


def parse_source(spec: str) -> tuple[Path, int | None]:
    """``"RUN_DIR"`` or ``"RUN_DIR@STEP"`` -> (path, step or None for the latest)."""
    run, sep, step = spec.rpartition("@")
    if not sep or "/" in step:
        return Path(spec), None
    try:
        value = int(step)
    except ValueError:
        raise UserError(f"--init-from {spec}: expected RUN_DIR or RUN_DIR@STEP (STEP an integer)") from None
    return Path(run), value


def merge_by_path(fresh: dict, source: dict, what: str) -> tuple[dict, list[str], list[str]]:
    """``fresh`` with every leaf that ``source`` has at the same path (both ``{player: pytree}``); returns the
    merged tree, the paths kept fresh and the source paths dropped. A shape or dtype mismatch is a UserError."""
    src = param_paths(source)
    dst = param_paths(fresh)
    bad = [f"{p} {tuple(src[p].shape)} -> {tuple(dst[p].shape)}" for p in dst
           if p in src and (tuple(src[p].shape) != tuple(dst[p].shape) or src[p].dtype != dst[p].dtype)]
    if bad:
        raise UserError(f"--init-from: {len(bad)} {what} have another shape or dtype in the new model "
                        f"({'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''}); change the new model or "
                        "freshly initialise them under other names")
    kept_fresh = [p for p in dst if p not in src]
    dropped = [p for p in src if p not in dst]

    def pick(name, path, leaf):
        key = param_path(name, path)
        return np.asarray(src[key]) if key in src else leaf

    merged = {name: jax.tree_util.tree_map_with_path(lambda path, leaf, name=name: pick(name, path, leaf), sub)
              for name, sub in fresh.items()}
    return merged, kept_fresh, dropped


def initialise_from(setup, state: dict, spec: str) -> tuple[dict, dict]:
    """``state`` (a fresh one of ``setup``) with params and model state restored by path from ``spec``; returns
    the new state (on the setup's shardings) and the record for config.json."""
    from aigc_jax.api import restore_run

    run, step = parse_source(spec)
    _, src_state, at = restore_run(run, step=step)
    src_state = jax.device_get(src_state)
    fresh = jax.device_get(state)
    params, fresh_params, dropped_params = merge_by_path(fresh["params"], src_state["params"], "parameters")
    if isinstance(fresh["model_state"], dict) and isinstance(src_state["model_state"], dict):
        model_state, fresh_ms, dropped_ms = merge_by_path(fresh["model_state"], src_state["model_state"],
                                                           "model-state arrays")
    else:
        model_state, fresh_ms, dropped_ms = fresh["model_state"], [], []
    new = dict(state)
    new["params"] = jax.device_put(params, setup.state_shardings["params"])
    new["model_state"] = jax.device_put(model_state, setup.state_shardings["model_state"])
    if "ema" in new:  # a moving average starts at the restored params
        new["ema"] = {name: {"params": new["params"][name], "count": e["count"]} for name, e in new["ema"].items()}
    record = {
        "run": str(run.resolve()),
        "step": int(at),
        "config_sha256": hashlib.sha256((run / "config.json").read_bytes()).hexdigest(),
        "restored": len(param_paths(params)) - len(fresh_params),
        "fresh": fresh_params + fresh_ms,
        "dropped": dropped_params + dropped_ms,
    }
    return new, record
