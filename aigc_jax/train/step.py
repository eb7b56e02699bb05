"""The train state and the one jitted train step, built from a model's pure functions.

The state is one pytree (a dict), never positional tuples::

    {"step": int32[], "rng": uint32[2], "params": {player: ...}, "opt_state": {player: ...},
     "model_state": ..., "nonfinite_step": int32[]}

and, when a player keeps a moving average (``players.NAME.ema_decay > 0``),
``"ema": {player: {"params": ..., "count": int32[]}}``: the trainer's exponential moving average of that player's
params (`aigc_jax.nn.ema`), updated after every applied update with decay ``min(ema_decay, (1 + t) / (10 + t))``
for the t-th (``ema_warmup``) or ``ema_decay``; it starts at the initial params.

A train step runs the update schedule: for each player in order, ``updates_per_step`` Optax updates of that
player's params (a `lax.scan` when more than one), each on its own micro-batch of the step's batch and its own key
``fold_in(fold_in(fold_in(rng, step), player_index), update_index)``. An update whose loss or gradient is not finite
is not applied, and the first step where that happened is recorded in ``nonfinite_step`` for the host to report, so
a NaN never reaches the params or a checkpoint. A `StateUpdates` model's ``after_update(player, params, state) ->
state`` is called with the updated params after every applied update (an exponential moving average of weights).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from aigc_jax.core.contract import StateUpdates
from aigc_jax.nn.ema import ema_update, ema_warmup_decay
from aigc_jax.nn.kernels import reverse_mode_kernels


def init_state(model, optimizers: dict[str, optax.GradientTransformation], key: jax.Array,
               ema: dict[str, tuple[float, bool]] | None = None) -> dict:
    """A fresh state from a typed PRNG key (``jax.random.key``); ``ema``: ``{player: (decay, warmup)}`` of the
    players that keep a moving average."""
    params, model_state = model.init(key)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "rng": jax.random.key_data(jax.random.fold_in(key, 1)),  # raw uint32 data: checkpointable
        "params": params,
        "opt_state": {name: optimizers[name].init(params[name]) for name in model.players},
        "model_state": model_state,
        "nonfinite_step": jnp.full((), -1, jnp.int32),
    }
    if ema:
        state["ema"] = {name: {"params": jax.tree.map(jnp.copy, params[name]), "count": jnp.zeros((), jnp.int32)}
                        for name in ema}
    return state


def averaged_state(state: dict) -> dict:
    """``state`` with each averaged player's params replaced by its moving average (the same structure)."""
    return {**state, "params": {**state["params"], **{name: e["params"] for name, e in state.get("ema", {}).items()}}}


def ema_step(average: dict, params, decay: float, warmup: bool) -> dict:
    """One update of ``{"params", "count"}`` towards ``params``."""
    t = average["count"] + 1
    d = ema_warmup_decay(decay, t) if warmup else jnp.float32(decay)
    return {"params": ema_update(average["params"], params, d), "count": t}


def per_device_value_and_grad(mesh: Mesh, batch_axes: tuple[str, ...]) -> Callable:
    """``jax.value_and_grad(objective, has_aux=True)`` for a mesh that only splits the batch: every device
    differentiates the loss on its own rows, and one all-reduce averages the gradient, loss and metrics, flattened
    into a single buffer.

    Same result as letting GSPMD reduce the gradient, for a loss that is the mean of equal-sized per-example terms
    with no randomness, no cross-example statistics, no state update and metrics that are such means too (a
    model's ``per_example_loss``). Why:
    XLA:CPU's in-process all-reduce meets at one rendezvous per buffer, and GSPMD reduces a tuple of one buffer per
    parameter (measured in benchmarks/README.md, "What made our step faster").
    """

    def value_and_grad(objective, p, mb, *context):
        def local(p, mb, context):
            (loss, (m, new_state)), g = jax.value_and_grad(objective, has_aux=True)(p, mb, *context)
            flat, unravel = ravel_pytree((loss, m, g))
            loss, m, g = unravel(jax.lax.pmean(flat, batch_axes))
            return (loss, (m, new_state)), g

        # check_vma=False: the custom VJPs (`nn.dense`, causal attention) return per-device cotangents for the
        # replicated params, which the varying-axes type check rejects; the explicit pmean makes them replicated.
        return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(batch_axes), P()), out_specs=P(),
                             check_vma=False)(p, mb, context)

    return value_and_grad


def _value_and_grad(objective, p, *args):
    return jax.value_and_grad(objective, has_aux=True)(p, *args)


def build_train_step(
    model,
    optimizers: dict[str, optax.GradientTransformation],
    schedule: tuple[tuple[str, int], ...],
    transform: Callable[[dict, jax.Array], dict],
    value_and_grad: Callable = _value_and_grad,
    ema: dict[str, tuple[float, bool]] | None = None,
) -> Callable[[dict, dict], tuple[dict, dict]]:
    """The pure step ``(state, batch) -> (state, metrics)``; the caller jits it with shardings and donation.

    ``batch`` holds ``max(updates)`` micro-batches stacked on the leading axis (``[U * B, ...]``); update ``i`` of
    any player reads micro-batch ``i``. ``value_and_grad(objective, p, batch, *context)`` differentiates a player's
    loss (default: ``jax.value_and_grad``, GSPMD placing the reductions; or `per_device_value_and_grad`).
    ``ema``: ``{player: (decay, warmup)}`` of the players whose moving average ``state["ema"]`` keeps.
    """
    ema = ema or {}
    max_updates = max(n for _, n in schedule)
    single = len(schedule) == 1
    after_update = model.after_update if isinstance(model, StateUpdates) else None

    def step_fn(state: dict, batch: dict) -> tuple[dict, dict]:
        step = state["step"]
        step_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        micro = jax.tree.map(lambda x: x.reshape(max_updates, x.shape[0] // max_updates, *x.shape[1:]), batch)
        params, opt_state, mstate = dict(state["params"]), dict(state["opt_state"]), state["model_state"]
        averages = dict(state.get("ema", {}))
        bad = jnp.asarray(False)
        metrics: dict[str, jax.Array] = {}

        for pi, (player, n) in enumerate(schedule):
            opt = optimizers[player]

            def update(carry, i, player=player, pi=pi, opt=opt):
                params, opt_state, mstate, averages, bad = carry
                key = jax.random.fold_in(jax.random.fold_in(step_key, pi), i)
                data_key, loss_key = jax.random.split(key)
                mb = transform(jax.tree.map(lambda x: x[i], micro), data_key)

                def objective(p, mb, params, mstate, loss_key):
                    return model.loss(player, {**params, player: p}, mstate, mb, loss_key)

                with reverse_mode_kernels():  # the hand-written VJPs of aigc_jax.nn (reverse mode is all it needs)
                    (loss, (m, new_mstate)), grads = value_and_grad(objective, params[player], mb, params, mstate,
                                                                    loss_key)
                grad_norm = optax.global_norm(grads)
                # A NaN/Inf anywhere in the gradient makes its norm non-finite, so one reduction checks both.
                ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

                def apply(operands):
                    p, o, _, new_ms, avg = operands
                    # Optax's bias corrections raise a Python float to an int32 count: under the tests' strict
                    # dtype promotion that needs the standard rules (the model code itself is checked strictly).
                    with jax.numpy_dtype_promotion("standard"):
                        updates, o = opt.update(grads, o, p)
                    p = optax.apply_updates(p, updates)
                    if after_update is not None:  # e.g. a GAN's EMA of generator weights, from the updated params
                        after = after_update(player, {**params, player: p}, new_ms)
                        if isinstance(opt, optax.MultiSteps):  # accumulating: only a step that applied counts
                            applied = opt.has_updated(o)
                            after = jax.tree.map(lambda a, b: jnp.where(applied, a, b), after, new_ms)
                        new_ms = after
                    if player in ema:  # the trainer's moving average, from the updated params
                        new_avg = ema_step(avg, p, *ema[player])
                        if isinstance(opt, optax.MultiSteps):
                            applied = opt.has_updated(o)
                            new_avg = jax.tree.map(lambda a, b: jnp.where(applied, a, b), new_avg, avg)
                        avg = new_avg
                    return p, o, new_ms, avg

                def skip(operands):
                    p, o, old_ms, _, avg = operands
                    return p, o, old_ms, avg

                # lax.cond runs one branch: skipping costs nothing, unlike a where-select over every leaf.
                new_p, new_os, mstate, new_avg = jax.lax.cond(
                    ok, apply, skip, (params[player], opt_state[player], mstate, new_mstate, averages.get(player))
                )
                params = {**params, player: new_p}
                opt_state = {**opt_state, player: new_os}
                if player in ema:
                    averages = {**averages, player: new_avg}
                m = {"loss": loss, "grad_norm": grad_norm, **m}
                return (params, opt_state, mstate, averages, bad | ~ok), m

            carry = (params, opt_state, mstate, averages, bad)
            if n == 1:
                carry, m = update(carry, 0)
            else:
                # Unrolled: XLA:CPU runs convolutions inside a rolled loop body many times slower (measured in
                # benchmarks/README.md, "WGAN-GP on XLA:CPU").
                carry, m = jax.lax.scan(update, carry, jnp.arange(n), unroll=True)
                m = jax.tree.map(jnp.mean, m)
            params, opt_state, mstate, averages, bad = carry
            prefix = "" if single else f"{player}/"
            metrics.update({prefix + k: v for k, v in m.items()})

        new_state = {
            "step": step + 1,
            "rng": state["rng"],
            "params": params,
            "opt_state": opt_state,
            "model_state": mstate,
            "nonfinite_step": jnp.where((state["nonfinite_step"] < 0) & bad, step, state["nonfinite_step"]),
        }
        if ema:
            new_state["ema"] = averages
        return new_state, metrics

    return step_fn


def population_step(step_fn: Callable, population: int, mode: str) -> Callable:
    """``step_fn`` over a population: the state has a leading member axis and every member trains on the same
    batch. ``mode="vmap"`` batches the members into one program (`jax.vmap`), ``"loop"`` runs them one after the
    other inside it (`jax.lax.map`, one member's program in a loop body)."""
    if population == 1:
        return step_fn
    if mode == "vmap":
        return jax.vmap(step_fn, in_axes=(0, None))

    def looped(states, batch):
        return jax.lax.map(lambda s: step_fn(s, batch), states)

    return looped


def build_eval_step(model, transform) -> Callable[[dict, dict, jax.Array, jax.Array], dict]:
    """``(state, batch, mask, key) -> {name: masked sum}`` over one batch; the host divides by the count."""

    def eval_fn(state, batch, mask, key):
        data_key, model_key = jax.random.split(key)
        b = transform(batch, data_key)
        per_example = model.eval_metrics(state["params"], state["model_state"], b, model_key)
        return {k: jnp.sum(v * mask) for k, v in per_example.items()}

    return eval_fn

