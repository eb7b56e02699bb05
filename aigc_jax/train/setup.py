"""Everything a run needs besides its loop: model, mesh, optimizers, shardings, jitted functions.

`train`, `eval`, `sample` and `aigc_jax.load` all build one `Setup` from a config, so the state they restore has
the same structure and shardings as the one the trainer saved.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aigc_jax.core.config import ExperimentConfig
from aigc_jax.core.contract import Partitioned
from aigc_jax.core.errors import UserError
from aigc_jax.core.registry import build_model
from aigc_jax.data.pipeline import make_device_transform
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.optim import make_optimizers, set_lr_scale
from aigc_jax.train.step import (
    averaged_state,
    build_eval_step,
    build_train_step,
    init_state,
    per_device_value_and_grad,
    population_step,
)


@dataclasses.dataclass
class Setup:
    config: ExperimentConfig
    model: Any
    mesh: Mesh
    optimizers: dict[str, optax.GradientTransformation]
    schedule: tuple[tuple[str, int], ...]
    state_shardings: Any
    abstract_state: Any  # ShapeDtypeStructs carrying the shardings: the restore target
    batch_sharding: jax.sharding.NamedSharding
    examples_per_step: int  # global batch * max(updates_per_step)

    @functools.cached_property
    def ema(self) -> dict[str, tuple[float, bool]]:
        return ema_players(self.config)

    def sampling_state(self, state: dict) -> dict:
        """The state whose params sample grids, `aigc_jax.sample` and `aigc_jax.load` use (``train.sample_weights``):
        ``state``, or with the moving averages as params."""
        return averaged_state(state) if self.config.train.sample_weights == "ema" else state

    @functools.cached_property
    def samplers(self) -> dict:
        """Jitted samplers by (sample count, settings), made by `aigc_jax.train.sampling.draw`."""
        return {}

    @functools.cached_property
    def transform(self):
        return make_device_transform(self.config.data)

    @functools.cached_property
    def per_device_gradients(self) -> bool:
        """Whether the train step differentiates per device and reduces one flat buffer (`per_device_value_and_grad`):
        on a mesh that splits only the batch (params replicated), for a model whose spec declares
        ``per_example_loss``."""
        only_batch = self.mesh.shape["fsdp"] == self.mesh.shape["tensor"] == 1 < self.mesh.shape["data"]
        return only_batch and self.model.spec.per_example_loss

    @property
    def population(self) -> int:
        """Members trained together (``train.population``): 1, or K with a leading member axis on every leaf."""
        return self.config.train.population

    @functools.cached_property
    def member(self) -> Setup:
        """The setup of one member of a population (itself for a single run): evaluation and sampling run on it."""
        if self.population == 1:
            return self
        # A member keeps the learning-rate factor in its optimizer state (its own, from the population's state).
        scale = (1.0,) if self.config.train.population_lr_scale else ()
        train = dataclasses.replace(self.config.train, population=1, population_lr_scale=scale)
        return build_setup(dataclasses.replace(self.config, train=train), self.mesh, for_training=False)

    def member_state(self, state: dict, i: int) -> dict:
        """Member ``i``'s state, placed as a single run's (``state`` itself for a single run)."""
        if self.population == 1:
            return state
        if not 0 <= i < self.population:
            raise UserError(f"member {i}: this run is a population of {self.population} (members 0.."
                            f"{self.population - 1})")
        return jax.device_put(jax.tree.map(lambda x: x[i], state), self.member.state_shardings)

    @functools.cached_property
    def train_step(self):
        per_device = ({"value_and_grad": per_device_value_and_grad(self.mesh, meshlib.BATCH_AXES)}
                      if self.per_device_gradients else {})
        fn = build_train_step(self.model, self.optimizers, self.schedule, self.transform, ema=self.ema, **per_device)
        fn = population_step(fn, self.population, self.config.train.population_mode)
        return jax.jit(
            meshlib.within(self.mesh, fn),
            in_shardings=(self.state_shardings, self.batch_sharding),
            out_shardings=(self.state_shardings, meshlib.replicated(self.mesh)),
            donate_argnums=(0,),
        )

    @functools.cached_property
    def eval_step(self):
        fn = build_eval_step(self.model, self.transform)
        rep = meshlib.replicated(self.mesh)
        # Eval never donates: the state goes on training afterwards.
        return jax.jit(
            meshlib.within(self.mesh, fn),
            in_shardings=(self.state_shardings, self.batch_sharding, self.batch_sharding, rep), out_shardings=rep,
        )

    def init_state(self, seed: int):
        """A fresh state created directly with its shardings (never materialised unsharded); member i of a
        population is the state of a single run with seed ``seed + i`` (and its learning rates times
        ``train.population_lr_scale[i]``). One compiled program for every seed (`_init_fn`)."""
        scales = self.config.train.population_lr_scale
        if self.population == 1:
            return self._init_fn(seed, jnp.float32(scales[0]) if scales else None)
        seeds = seed + jnp.arange(self.population, dtype=jnp.uint32)
        factors = jnp.asarray(scales or [1.0] * self.population, jnp.float32)
        return self._init_fn(seeds, factors)

    @functools.cached_property
    def _init_fn(self):
        """``(seed, lr scale) -> state``, jitted once per setup (vmapped over the members of a population)."""
        scales = self.config.train.population_lr_scale

        def one(seed, scale):
            state = init_state(self.model, self.optimizers, jax.random.key(seed), self.ema)
            if scales:  # member i's learning-rate factor, in its optimizer states
                state["opt_state"] = {name: set_lr_scale(s, scale) for name, s in state["opt_state"].items()}
            return state

        return jax.jit(one if self.population == 1 else jax.vmap(one), out_shardings=self.state_shardings)


def ema_players(config: ExperimentConfig) -> dict[str, tuple[float, bool]]:
    """``{player: (decay, warmup)}`` of the players whose moving average the trainer keeps."""
    return {p.name: (p.ema_decay, p.ema_warmup) for p in config.players if p.ema_decay > 0}


def build_setup(config: ExperimentConfig, mesh: Mesh | None = None, for_training: bool = True) -> Setup:
    """The model, optimizers, shardings and jitted steps of ``config`` on ``mesh`` (default: from ``config.mesh``).

    ``for_training=False`` (sampling, evaluation, loading) skips the checks on the training batch, whose size then
    need not divide the (possibly different) number of devices.
    """
    model = build_model(config)
    mesh = meshlib.make_mesh(config.mesh) if mesh is None else mesh
    optimizers = make_optimizers(config)
    schedule = tuple((p.name, p.updates_per_step) for p in config.players)
    param_specs = model.param_partition_specs if isinstance(model, Partitioned) else None
    if mesh.shape["tensor"] > 1 and param_specs is None:
        raise UserError(f"--mesh tensor={mesh.shape['tensor']}: {config.model_name} has no tensor-parallel layout "
                        "(its model declares no Partitioned layout); use the data and fsdp axes")
    if for_training:
        meshlib.check_batch(mesh, config.data.batch_size)
        meshlib.check_process_rows(mesh, config.data.batch_size)
    ema = ema_players(config)
    abstract = jax.eval_shape(lambda k: init_state(model, optimizers, k, ema), jax.random.key(0))

    params_sh = meshlib.param_shardings(abstract["params"], mesh, param_specs() if param_specs else None)
    rep = meshlib.replicated(mesh)
    shardings = {
        "step": rep,
        "rng": rep,
        "params": params_sh,
        "opt_state": {
            name: meshlib.follow_params(abstract["opt_state"][name], abstract["params"][name], params_sh[name], mesh)
            for name in model.players
        },
        # Model state that mirrors a player's params (a GAN's moving-average generator) is sharded like them.
        "model_state": meshlib.follow_params(abstract["model_state"], abstract["params"], params_sh, mesh,
                                             below_root=True),
        "nonfinite_step": rep,
    }
    if ema:  # a moving average is sharded like the params it follows
        shardings["ema"] = {name: {"params": params_sh[name], "count": rep} for name in ema}
    k = config.train.population
    if k > 1:  # every leaf gains a leading member axis, never split: each member's layout is a single run's
        shardings = jax.tree.map(lambda sh: NamedSharding(mesh, P(None, *sh.spec)), shardings)
        abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct((k, *a.shape), a.dtype), abstract)
    abstract_sharded = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )
    max_updates = max(n for _, n in schedule)
    return Setup(
        config=config,
        model=model,
        mesh=mesh,
        optimizers=optimizers,
        schedule=schedule,
        state_shardings=shardings,
        abstract_state=abstract_sharded,
        batch_sharding=meshlib.batch_sharding(mesh),
        examples_per_step=config.data.batch_size * max_updates,
    )
