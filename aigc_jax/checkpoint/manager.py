"""Orbax checkpointing of the train state, the Grain iterator and the config, with per-array checksums.

A checkpoint ``checkpoints/<step>/`` holds four items: ``state`` (params, optimizer state, step, RNG, model
state), ``data`` (the Grain iterator's state), ``config`` (the resolved config as JSON) and ``integrity`` (one
checksum per state array, computed on device when the checkpoint is saved and checked when it is restored).
Saving is async; the last ``keep`` checkpoints and the best one by eval loss are kept.

Restoring the latest checkpoint falls back to the previous one when the latest cannot be read or its arrays do
not match their checksums (flipped bytes, a truncated or deleted file, an interrupted write), saying so in one
line; when none is left it stops with one line (`CheckpointError`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from aigc_jax.core.errors import UserError

BEST_METRIC = "eval_loss"
INTEGRITY = "integrity"


class CheckpointError(UserError):
    """A checkpoint that cannot be restored: unreadable, incomplete, or not matching its checksums."""


def _best_metric(metrics) -> float:
    return float(metrics[BEST_METRIC])


def _leaf_checksum(x: jax.Array) -> jax.Array:
    """``sum_i u_i * (2i + 1) mod 2**32`` over the array's bit patterns ``u`` (uint32 words; narrower dtypes
    widened, wider ones split). Integer arithmetic modulo 2**32 is associative, so the sum does not depend on the
    sharding or the reduction order, and any single flipped bit changes it (an odd weight times a power of two
    below 2**32 is never 0 modulo 2**32)."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    width = x.dtype.itemsize
    if width in (1, 2, 4):
        u = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width])
    else:  # 8 bytes: two uint32 words per element
        u = jax.lax.bitcast_convert_type(x, jnp.uint32)
    u = u.reshape(-1).astype(jnp.uint32)
    weights = jnp.arange(u.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)
    return jnp.sum(u * weights, dtype=jnp.uint32)


@jax.jit
def _checksums(state):
    return jax.tree.map(_leaf_checksum, state)


def checksums(state) -> dict[str, int]:
    """``{key path: checksum}`` of every array of ``state`` (one small jitted program; sharded arrays stay put)."""
    sums = jax.device_get(_checksums(state))
    return {jax.tree_util.keystr(path): int(v) for path, v in jax.tree_util.tree_flatten_with_path(sums)[0]}


def _quiet_abandoned_reads() -> None:
    """When a restore fails, TensorStore completes the reads Orbax abandoned by calling back into an asyncio
    loop that is already closed; each callback's "Event loop is closed" would print a traceback (through
    `sys.unraisablehook`) beside our one-line report, sometimes before the exception reaches us. Installed
    (once) before every restore: drop exactly those; pass everything else on."""
    previous = sys.unraisablehook
    if getattr(previous, "_aigc_jax_quiet", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook._aigc_jax_quiet = True
    sys.unraisablehook = hook


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _state_handler() -> ocp.PyTreeCheckpointHandler:
    """The handler of the ``state`` item: Orbax's standard PyTree handler with its default type handlers, except
    that a replicated array is written from one device instead of in slices from every replica. Orbax's
    replica-parallel save cuts each replicated array into one slice per device (a sliced op per slice, each
    dispatched and compiled on first use) so that the devices' links to the host transfer in parallel; on a CPU
    the devices' memory is the host's, so the slices only cost: a tiny state on 8 simulated devices spent ~6 s
    slicing every array 8 ways. Accelerators keep the parallel transfer."""
    parallel = jax.default_backend() != "cpu"
    types = [int, float, bytes, np.number, np.ndarray, str, type(...)]
    registry = ocp.type_handlers.create_type_handler_registry(
        *[(ty, ocp.type_handlers.get_type_handler(ty)) for ty in types],
        (jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=parallel)),
    )
    return ocp.PyTreeCheckpointHandler(type_handler_registry=registry)


class Checkpointer:
    def __init__(self, directory: str | Path, keep: int = 3, async_save: bool = True, read_only: bool = False):
        policy = pp.AnyPreservationPolicy(
            [
                pp.LatestN(n=keep),
                # reverse=True keeps the lowest eval loss (BestN keeps the largest metric by default).
                pp.BestN(get_metric_fn=_best_metric, reverse=True, n=1, keep_checkpoints_without_metrics=False),
            ]
        )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            enable_async_checkpointing=async_save,
            create=not read_only,
            read_only=read_only,
            cleanup_tmp_directories=not read_only,  # an interrupted save's temporary folder
        )
        self.directory = Path(directory).absolute()
        self.read_only = read_only
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "config", INTEGRITY),
            item_handlers={"state": _state_handler()},
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, iterator, config: dict, eval_loss: float | None = None) -> None:
        items = {
            "state": ocp.args.PyTreeSave(state),
            "config": ocp.args.JsonSave(config),
            INTEGRITY: ocp.args.JsonSave({"checksums": checksums(state)}),
        }
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(iterator)
        metrics = None if eval_loss is None else {BEST_METRIC: float(eval_loss)}
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def read_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        except Exception as e:  # noqa: BLE001  (Orbax/TensorStore raise many types; one line for the user)
            raise CheckpointError(f"checkpoint {self.directory / str(step)}: its config cannot be read "
                                  f"({_first_line(e)})") from None
        return out["config"]

    def _elastic_data_state(self, step: int):
        """The data iterator's state from a checkpoint written by a different number of processes, or None when
        this process's own file is there (Grain names them ``process_I-of-N.json``). Every process's iterator is
        at the same global batch index (each reads its rows of the same batches), so the states of all processes
        are one state, which any process count can continue from."""
        data = self.directory / str(step) / "data"
        own = data / f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        saved = sorted(data.glob("process_*-of-*.json")) if data.is_dir() else []
        if own.exists() or not saved:
            return None
        try:
            states = {json.dumps(json.loads(p.read_text()), sort_keys=True) for p in saved}
        except (OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {self.directory / str(step)}: its data iterator state cannot be "
                                  f"read ({_first_line(e)})") from None
        if len(states) != 1:
            raise CheckpointError(f"checkpoint {self.directory / str(step)} was written by {len(saved)} processes "
                                  "whose data positions differ; resume it with that many processes")
        return json.loads(states.pop())

    def _restore_verified(self, abstract_state, iterator, step: int):
        restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
        items = {"state": ocp.args.PyTreeRestore(abstract_state, restore_args=restore_args)}
        elastic = None if iterator is None else self._elastic_data_state(step)
        if iterator is not None and elastic is None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        has_sums = (self.directory / str(step) / INTEGRITY).exists()
        if has_sums:
            items[INTEGRITY] = ocp.args.JsonRestore()
        where = self.directory / str(step)
        _quiet_abandoned_reads()  # before the read: the callbacks can race ahead of the exception
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"checkpoint {where} cannot be read ({_first_line(e)})") from None
        if has_sums:
            expected = out[INTEGRITY]["checksums"]
            got = checksums(out["state"])
            bad = [k for k in expected if got.get(k) != expected[k]] + [k for k in got if k not in expected]
            if bad:
                raise CheckpointError(f"checkpoint {where} is corrupt: {len(bad)} array(s) do not match the "
                                      f"checksums written when it was saved (first: state{bad[0]})")
        if elastic is not None:
            iterator.set_state(elastic)
        return out["state"]

    def restore(self, abstract_state, iterator=None, step: int | None = None, *, fall_back: bool | None = None):
        """Restore into an abstract target (ShapeDtypeStructs with shardings); returns ``(step, state)``.

        ``step=None`` restores the latest good checkpoint: a bad one is reported on stderr in one line and the
        previous one is tried (``fall_back``, default on for ``step=None``); when it is writable, the bad ones are
        deleted so that training can save those steps again. A given ``step`` must itself be good.
        """
        fall_back = step is None if fall_back is None else fall_back
        steps = [self.latest_step() if step is None else step]
        if fall_back:
            steps = sorted((s for s in self.all_steps() if s <= steps[0]), reverse=True)
        errors = []
        for s in steps:
            try:
                state = self._restore_verified(abstract_state, iterator, s)
            except CheckpointError as e:
                if not fall_back:
                    raise
                errors.append(s)
                print(f"aigc-jax: warning: {e}; trying an earlier one", file=sys.stderr)
                continue
            if errors and not self.read_only:
                for bad in errors:
                    self.manager.delete(bad)
            return s, state
        raise CheckpointError(f"no readable checkpoint left in {self.directory} (tried steps "
                              f"{', '.join(map(str, errors))}); train into a new --workdir or restore the files")

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
