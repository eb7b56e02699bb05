"""Orbax checkpointing of the train state, the Grain iterator and the config.

A checkpoint ``checkpoints/<step>/`` holds three items: ``state`` (params, optimizer state, step, RNG, model
state), ``data`` (the Grain iterator's state) and ``config`` (the resolved config as JSON). Saving is async; the
last ``keep`` checkpoints and the best one by eval loss are kept.
"""

from __future__ import annotations

from pathlib import Path

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

BEST_METRIC = "eval_loss"


def _best_metric(metrics) -> float:
    return float(metrics[BEST_METRIC])


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
        )
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "data", "config")
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state, iterator, config: dict, eval_loss: float | None = None) -> None:
        items = {
            "state": ocp.args.StandardSave(state),
            "config": ocp.args.JsonSave(config),
        }
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(iterator)
        metrics = None if eval_loss is None else {BEST_METRIC: float(eval_loss)}
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

    def read_config(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return out["config"]

    def restore(self, abstract_state, iterator=None, step: int | None = None):
        """Restore into an abstract target (ShapeDtypeStructs with shardings); returns (step, state)."""
        step = self.latest_step() if step is None else step
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return step, out["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

