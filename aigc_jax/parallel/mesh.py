"""Device meshes, parameter and batch shardings, multi-host start-up.

Every mesh has the three axes ``data``, ``fsdp`` and ``tensor`` (size 1 when unused), so model code and the
trainer never branch on the parallelism layout. The global batch is split over ``data`` and ``fsdp`` together
(FSDP is data parallelism whose parameters are also sharded); parameters are sharded over ``fsdp`` and ``tensor``.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from aigc_jax.core.errors import UserError

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")
# Arrays smaller than this stay replicated under FSDP: sharding them saves nothing and costs collectives.
MIN_SHARD_SIZE = 2**12


def parse_mesh(spec: str, num_devices: int | None = None) -> dict[str, int]:
    """Parse ``"data=4,fsdp=2"`` into axis sizes; unnamed axes get 1 and ``data`` takes the remaining devices.

    An empty spec puts every device on ``data``. The product of the sizes must equal the device count.
    """
    n = jax.device_count() if num_devices is None else num_devices
    sizes: dict[str, int] = {}
    for part in filter(None, (s.strip() for s in spec.split(","))):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in AXES:
            raise UserError(f"bad --mesh entry {part!r}: expected AXIS=SIZE with AXIS one of {', '.join(AXES)}")
        if name in sizes:
            raise UserError(f"bad --mesh {spec!r}: axis {name!r} given twice")
        try:
            sizes[name] = int(value)
        except ValueError:
            raise UserError(f"bad --mesh entry {part!r}: the size must be a positive integer") from None
        if sizes[name] < 1:
            raise UserError(f"bad --mesh entry {part!r}: the size must be a positive integer")
    for ax in ("fsdp", "tensor"):
        sizes.setdefault(ax, 1)
    if "data" not in sizes:
        rest = n // (sizes["fsdp"] * sizes["tensor"])
        sizes["data"] = max(rest, 1)
    total = math.prod(sizes.values())
    if total != n:
        got = ",".join(f"{a}={sizes[a]}" for a in AXES)
        raise UserError(f"--mesh {got} uses {total} devices but {n} are available: the sizes must multiply to {n}")
    return {a: sizes[a] for a in AXES}


def make_mesh(spec: str = "", devices=None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh with GSPMD (Auto) axis types."""
    devices = jax.devices() if devices is None else list(devices)
    sizes = parse_mesh(spec, len(devices))
    shape = tuple(sizes[a] for a in AXES)
    return jax.make_mesh(
        shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES), devices=devices
    )


def within(mesh: Mesh, fn):
    """``fn`` traced with ``mesh`` as the abstract mesh, so that model code can place `constrain` hints by axis
    name without holding the mesh."""

    @functools.wraps(fn)
    def traced(*args, **kwargs):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return fn(*args, **kwargs)

    return traced


def constrain(x, spec: P):
    """``jax.lax.with_sharding_constraint(x, spec)`` inside `within` on a mesh of several devices; anywhere else
    (no mesh, one device, or inside ``shard_map``, whose axes are manual) ``x`` unchanged, so that the hint never
    alters a single-device or per-device program."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or mesh.manual_axes:
        return x
    return jax.lax.with_sharding_constraint(x, spec)


def batch_shards(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch(mesh: Mesh, batch_size: int, what: str = "data.batch_size") -> None:
    n = batch_shards(mesh)
    if batch_size % n:
        raise UserError(
            f"{what}={batch_size} cannot be split over the mesh's batch axes "
            f"(data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']} = {n}): use a multiple of {n}"
        )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data and fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_spec(shape: tuple[int, ...], fsdp: int) -> P:
    """FSDP for an un-annotated parameter: shard its largest dimension that ``fsdp`` divides."""
    if fsdp == 1 or math.prod(shape) < MIN_SHARD_SIZE:
        return P()
    order = sorted(range(len(shape)), key=lambda i: -shape[i])
    for i in order:
        if shape[i] % fsdp == 0:
            spec = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def param_shardings(abstract_params, mesh: Mesh, specs=None):
    """NamedShardings for a params pytree.

    ``specs`` (optional) is a matching pytree of PartitionSpecs from a model's logical-axis annotations; leaves it
    leaves as None fall back to the FSDP rule of `fsdp_spec`.
    """
    fsdp = mesh.shape["fsdp"]
    if specs is None:
        return jax.tree.map(lambda a: NamedSharding(mesh, fsdp_spec(a.shape, fsdp)), abstract_params)

    def pick(path, a, s):
        if s is None:
            return NamedSharding(mesh, fsdp_spec(a.shape, fsdp))
        for dim, (size, axis) in enumerate(zip(a.shape, tuple(s) + (None,) * (len(a.shape) - len(s)), strict=True)):
            n = mesh.shape[axis] if axis else 1
            if size % n:
                name = "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
                raise UserError(
                    f"parameter {name} {tuple(a.shape)}: dimension {dim} ({size}) cannot be split over mesh axis "
                    f"{axis}={n}; pad it to a multiple of {n} (a GPT's vocabulary: model.vocab_multiple) or map its "
                    "logical axis to none in model.axis_rules"
                )
        return NamedSharding(mesh, s)

    return jax.tree_util.tree_map_with_path(pick, abstract_params, specs, is_leaf=lambda x: x is None)


def _path_key(path) -> tuple:
    return tuple(str(k) for k in path)


def follow_params(abstract_tree, abstract_params, params_sharding, mesh: Mesh, below_root: bool = False):
    """Shardings for a tree (an Optax state) whose leaves mirror params: a leaf whose key path ends with a param's
    key path and has its shape takes that param's sharding; every other leaf (counts, scalars) is replicated.
    ``below_root``: a param's path without its first key (the player's name) matches too."""
    by_path: dict[tuple, list] = {}
    for (path, a), s in zip(
        jax.tree_util.tree_flatten_with_path(abstract_params)[0], jax.tree.leaves(params_sharding), strict=True
    ):
        key = _path_key(path)
        for k in (key, key[1:]) if below_root and len(key) > 1 else (key,):
            by_path.setdefault(k, []).append((a.shape, s))

    def pick(path, leaf):
        key = _path_key(path)
        for start in range(len(key)):
            for shape, sharding in by_path.get(key[start:], ()):
                if shape == leaf.shape:
                    return sharding
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, abstract_tree)


def initialize_distributed() -> None:
    """Start ``jax.distributed`` when the environment asks for several processes (one per host).

    Set ``AIGC_JAX_COORDINATOR=host:port``, ``AIGC_JAX_NUM_PROCESSES`` and ``AIGC_JAX_PROCESS_ID`` (or run where
    JAX auto-detects a cluster, e.g. a TPU pod slice or SLURM, with ``AIGC_JAX_DISTRIBUTED=1``).
    """
    coord = os.environ.get("AIGC_JAX_COORDINATOR")
    if coord:
        try:
            num, pid = int(os.environ["AIGC_JAX_NUM_PROCESSES"]), int(os.environ["AIGC_JAX_PROCESS_ID"])
        except (KeyError, ValueError):
            raise UserError(
                "AIGC_JAX_COORDINATOR is set, so AIGC_JAX_NUM_PROCESSES and AIGC_JAX_PROCESS_ID must be integers"
            ) from None
        # Cross-process collectives on CPU need gloo; the setting only affects the CPU client.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coord, num_processes=num, process_id=pid)
    elif os.environ.get("AIGC_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def check_process_rows(mesh: Mesh, global_batch: int) -> None:
    """Each process feeds its contiguous 1/process_count of every batch (`local_batch_slice`): the mesh's batch
    axes must lay the batch out that way over the processes' devices."""
    if jax.process_count() == 1:
        return
    index = batch_sharding(mesh).addressable_devices_indices_map((global_batch,))
    starts = [s[0].start or 0 for s in index.values()]
    stops = [global_batch if s[0].stop is None else s[0].stop for s in index.values()]
    rows = local_batch_slice(global_batch)
    if (min(starts), max(stops)) != (rows.start, rows.stop):
        layout = ",".join(f"{k}={v}" for k, v in mesh.shape.items())
        raise UserError(f"--mesh {layout}: the batch axes (data x fsdp = {batch_shards(mesh)}) must "
                        f"split the batch over the {jax.process_count()} processes; put more of the devices on "
                        "data or fsdp")


def local_batch_slice(global_batch: int) -> slice:
    """This process's rows of a global batch (processes hold equal, contiguous slices)."""
    n, i = jax.process_count(), jax.process_index()
    per = global_batch // n
    return slice(i * per, (i + 1) * per)


def to_global(batch: Mapping[str, np.ndarray], sharding: NamedSharding):
    """Build global arrays from this process's slice of the batch (one process: a plain, cheaper device_put)."""
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), sharding)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


class InFlight:
    """Keeps the host at most ``depth`` dispatched programs ahead of the devices: `push` each program's (small)
    output; once more than ``depth`` are pending, it waits for the oldest.

    Why: XLA:CPU (jaxlib 0.10) launches the per-device parts of a multi-device program from a thread pool, and a
    device admits at most 32 queued programs. With dozens of steps queued, a later step's launch can hold a slot while
    an earlier step's launch for the same device waits for one, and the other device then waits forever in that
    earlier step's all-reduce. Two steps of look-ahead keep the devices as busy as an unbounded queue (the runs
    behind ``depth=2`` are in benchmarks/README.md, "Multi-device and multi-process GPT training on CPU").
    """

    def __init__(self, depth: int = 2):
        self.depth = depth
        self._pending: list = []

    def push(self, outputs) -> None:
        self._pending.append(outputs)
        if len(self._pending) > self.depth:
            jax.block_until_ready(self._pending.pop(0))
