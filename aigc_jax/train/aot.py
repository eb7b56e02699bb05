"""Ahead-of-time compilation of an experiment's sharded train step and sampler, for this host's devices or for a
TPU topology that is not attached (``aigc-jax compile``).

The program compiled is the trainer's own: `build_setup` on a mesh over the topology's devices, lowered from
shapes only (``setup.abstract_state`` and a batch of ``ShapeDtypeStruct``s), so what it reports is what `train`
would run there. For a TPU topology the compiler is libtpu's (the ``tpu`` extra) through
``jax.experimental.topologies.get_topology_desc``, as MaxText's ``train_compile.py`` does for its LLMs.

Reported per chip and per step: memory (arguments, outputs, aliased, temporaries, generated code, their total
against the chip's HBM), XLA's FLOP and bytes-accessed counts, the collectives in the compiled HLO with their
sizes, the compiler's "Involuntary full rematerialization" warnings, and a roofline estimate: step time
``max(FLOPs / peak, bytes / HBM bandwidth)`` from the datasheet figures in `CHIPS` (inter-chip communication is not
modelled) and model-FLOPs utilisation ``model FLOPs / (step time * peak)``, with model FLOPs from the model's
``flops_per_token`` where it declares one (`CountsFlops`); rematerialised recomputation counts in XLA's FLOPs,
not in model FLOPs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import time

import jax
import numpy as np

from aigc_jax.core.config import ExperimentConfig
from aigc_jax.core.contract import CountsFlops, ImageToImage, grid_conditions, sampling_params
from aigc_jax.core.errors import UserError
from aigc_jax.data import sources
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.setup import build_setup


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    peak_flops: float  # dense bfloat16 FLOP/s
    hbm_bytes: float
    hbm_bytes_per_s: float
    source: str


# Datasheet figures (Google Cloud TPU documentation, "TPU v5p": 459 TFLOP/s bf16 per chip, HBM2e 95 GB at
# 2,765 GB/s; https://cloud.google.com/tpu/docs/v5p).
CHIPS = {
    "v5p": Chip("TPU v5p", 459e12, 95e9, 2765e9, "https://cloud.google.com/tpu/docs/v5p"),
}

# Slice names count TensorCores (two per v5p chip): v5p-8 is 4 chips in a 2x2x1 torus. Shapes from the same page.
SLICES = {
    "v5p": {8: "2x2x1", 16: "2x2x2", 64: "2x4x4", 128: "4x4x4", 256: "4x4x8", 512: "4x8x8", 1024: "8x8x8",
            2048: "8x8x16", 4096: "8x16x16", 8192: "16x16x16", 12288: "16x16x24"},
}

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
REMAT_WARNING = "Involuntary full rematerialization"


def parse_topology(text: str) -> tuple[str, str]:
    """``"v5p-64"`` (a slice name) or ``"v5p:2x4x4"`` (generation and chip grid) -> ``("v5p", "2x4x4")``."""
    name = text.strip().lower()
    m = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", name)
    if m:
        gen, cores = m.group(1), int(m.group(2))
        shape = SLICES.get(gen, {}).get(cores)
        if shape is None:
            known = ", ".join(f"{g}-{c}" for g, t in SLICES.items() for c in t)
            raise UserError(f"unknown TPU slice {text!r}: expected one of {known}, or GENERATION:AxBxC "
                            "(e.g. v5p:4x4x4)")
        return gen, shape
    m = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+){1,2})", name)
    if not m:
        raise UserError(f"bad --topology {text!r}: expected a slice name such as v5p-64 or GENERATION:AxBxC such "
                        "as v5p:4x4x4")
    return m.group(1), m.group(2)


class _Captured:
    text = ""


@contextlib.contextmanager
def captured_stderr():
    """Collect what is written to file descriptor 2 (XLA's and libtpu's C++ logging) instead of showing it."""
    holder = _Captured()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield holder
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            holder.text = tmp.read().decode("utf-8", "replace")


def quiet_tpu_environment() -> None:
    """Settings that keep libtpu from probing for an attached TPU (its metadata-server queries and their warnings
    about ``TPU_ACCELERATOR_TYPE`` and worker hostnames). For compiling without one, and (`quiet_libtpu_if_no_tpu`)
    for any command on a host with libtpu installed and no TPU chip: on a TPU VM the metadata server is how libtpu
    learns the slice, so nothing sets these there."""
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5p-8")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_WORKER_ID", "0")
    # With no TPU to share, several compiling processes (or a test runner and its subprocesses) may load libtpu
    # at once; otherwise the second one stops at libtpu's multi-process lockfile.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


def quiet_libtpu_if_no_tpu() -> None:
    """`quiet_tpu_environment` when libtpu is installed but this host has no TPU chip (JAX's own PCI check, the one
    that makes it skip the metadata server then), so that a CPU or GPU command does not print libtpu's start-up
    warnings. Users' own settings win (set only where unset)."""
    if not _has_libtpu():
        return
    try:
        from jax._src import hardware_utils

        chips = hardware_utils.num_available_tpu_chips_and_device_id()[0]
    except Exception:  # noqa: BLE001 - a private helper of JAX: if it moves, leave the environment alone
        return
    if chips == 0:
        quiet_tpu_environment()


def topology_devices(gen: str, shape: str) -> list:
    """The devices of a TPU topology, from libtpu, with no TPU attached."""
    try:
        from jax.experimental import topologies
    except ImportError as e:  # pragma: no cover - part of every jax release we support
        raise UserError(f"this jax has no jax.experimental.topologies ({e})") from None
    name = f"{gen}:{shape}"
    with captured_stderr() as log:
        try:
            topo = topologies.get_topology_desc(platform="tpu", topology_name=name)
        except Exception as e:  # noqa: BLE001 - libtpu's errors are RuntimeErrors/XlaRuntimeErrors of any text
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            hint = "" if _has_libtpu() else "; libtpu is not installed: pip install 'aigc-jax[tpu]'"
            raise UserError(f"cannot build the TPU topology {name}: {first}{hint}") from None
    del log
    return list(topo.devices)


def _has_libtpu() -> bool:
    import importlib.util

    return importlib.util.find_spec("libtpu") is not None


def abstract_batch(setup) -> dict:
    """A global training batch as ``ShapeDtypeStruct``s with the batch sharding, from one record of the source."""
    src = sources.for_experiment(setup.config, "train", setup.model.spec)
    one = src.__getitems__(np.arange(1))
    n = setup.examples_per_step
    return {k: jax.ShapeDtypeStruct((n, *np.shape(v)[1:]), np.asarray(v).dtype, sharding=setup.batch_sharding)
            for k, v in one.items()}


def _array_bytes(shape_text: str) -> list[int]:
    """Bytes of each array in an HLO shape such as ``bf16[8,128]{1,0}`` or a tuple of them."""
    sizes = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
             "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
    arrays = [(dt, dims) for dt, dims in re.findall(r"\b([a-z]+\d*)\[([\d,]*)\]", shape_text) if dt in sizes]
    return [sizes[dt] * int(np.prod([int(d) for d in dims.split(",") if d] or [1])) for dt, dims in arrays]


def collectives(hlo_text: str) -> dict:
    """``{kind: {"count": n, "bytes": b}}`` over the collectives of a compiled HLO module (each op once, as written:
    one inside a loop body runs once per iteration)."""
    out: dict[str, dict[str, int]] = {}
    pattern = re.compile(r"^\s*\S+\s+=\s+([^\n]*?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(", re.MULTILINE)
    for shape, kind, start in pattern.findall(hlo_text):
        sizes = _array_bytes(shape)
        entry = out.setdefault(kind, {"count": 0, "bytes": 0})
        entry["count"] += 1
        # An async *-start returns (operands, result[, scratch]): its largest array is the transfer. A tuple
        # without -start is several arrays combined into one collective: all of them move.
        entry["bytes"] += (max(sizes) if start else sum(sizes)) if sizes else 0
    return dict(sorted(out.items()))


def _memory(compiled) -> dict:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        stats = None
    if stats is None:
        return {}
    names = {"arguments": "argument_size_in_bytes", "outputs": "output_size_in_bytes",
             "aliased": "alias_size_in_bytes", "temporaries": "temp_size_in_bytes",
             "generated_code": "generated_code_size_in_bytes"}
    mem = {k: int(getattr(stats, attr)) for k, attr in names.items() if getattr(stats, attr, None) is not None}
    if {"arguments", "outputs", "temporaries"} <= mem.keys():
        # Donated arguments alias their outputs: they occupy memory once.
        mem["total"] = (mem["arguments"] + mem["outputs"] - mem.get("aliased", 0) + mem["temporaries"]
                        + mem.get("generated_code", 0))
    return mem


def _cost(compiled) -> dict:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001
        cost = None
    if isinstance(cost, list | tuple):  # older jax: one dict per program
        cost = cost[0] if cost else None
    if not isinstance(cost, dict):
        return {}
    out = {}
    for key, name in (("flops", "flops"), ("bytes accessed", "bytes_accessed"), ("transcendentals",
                                                                                 "transcendentals")):
        value = cost.get(key)
        if isinstance(value, int | float) and np.isfinite(value) and value >= 0:
            out[name] = float(value)
    return out


def _depth_extrapolated_cost(config: ExperimentConfig, mesh, layers: int) -> dict:
    """FLOPs and bytes of a scanned ``layers``-block step: XLA's cost analysis counts a loop body once, so the
    step is compiled unrolled with 1 and 2 blocks and the per-block difference extrapolated linearly."""
    costs = []
    for n in (1, 2):
        model = dataclasses.replace(config.model, layers=n, scan_layers=False)
        setup = build_setup(dataclasses.replace(config, model=model), mesh)
        with captured_stderr():
            costs.append(_cost(setup.train_step.lower(setup.abstract_state, abstract_batch(setup)).compile()))
    out = {k: costs[0][k] + (layers - 1) * (costs[1][k] - costs[0][k]) for k in costs[0] if k in costs[1]}
    out["cost_method"] = f"unrolled 1- and 2-block steps extrapolated to {layers} blocks"
    return out


def analyse(compiled, log: str, chip: Chip | None, model_flops: float | None, seconds: float,
            cost: dict | None = None) -> dict:
    """The report of one compiled program (see the module docstring); ``cost`` replaces XLA's cost analysis."""
    rep = {"compile_seconds": round(seconds, 2), "memory_bytes": _memory(compiled),
           **(_cost(compiled) if cost is None else cost),
           "collectives": collectives(compiled.as_text() or ""),
           "involuntary_rematerializations": log.count(REMAT_WARNING)}
    if model_flops is not None:
        rep["model_flops"] = model_flops
    if chip is not None:
        total = rep["memory_bytes"].get("total")
        if total is not None:
            rep["hbm_fraction"] = total / chip.hbm_bytes
            rep["fits"] = total <= chip.hbm_bytes
        if "flops" in rep:
            t_compute = rep["flops"] / chip.peak_flops
            t_memory = rep.get("bytes_accessed", 0.0) / chip.hbm_bytes_per_s
            t = max(t_compute, t_memory)
            rep["roofline"] = {"step_seconds": t, "compute_seconds": t_compute, "memory_seconds": t_memory,
                               "bound": "compute" if t_compute >= t_memory else "memory"}
            if model_flops is not None and t > 0:
                rep["roofline"]["mfu"] = model_flops / (t * chip.peak_flops)
    return rep


def compile_report(config: ExperimentConfig, mesh, chip: Chip | None = None, sampler: bool = True) -> dict:
    """Compile ``config``'s train step (and its sampler) on ``mesh`` from shapes and report on them."""
    setup = build_setup(config, mesh)
    batch = abstract_batch(setup)
    chips = mesh.devices.size
    model_flops = None
    if isinstance(setup.model, CountsFlops):
        tokens = setup.examples_per_step * setup.model.spec.data_dims
        model_flops = setup.model.flops_per_token() * tokens / chips
    report = {
        "experiment": config.name,
        "devices": chips,
        "device_kind": mesh.devices.flat[0].device_kind,
        "mesh": dict(mesh.shape),
        "global_batch": setup.examples_per_step,
        "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(setup.abstract_state["params"]))),
    }
    if chip is not None:
        report["chip"] = dataclasses.asdict(chip)
    with captured_stderr() as log:
        t0 = time.perf_counter()
        compiled = setup.train_step.lower(setup.abstract_state, batch).compile()
        seconds = time.perf_counter() - t0
    step_cost = None
    layers = getattr(config.model, "layers", 0)
    if getattr(config.model, "scan_layers", False) and layers > 2:
        step_cost = _depth_extrapolated_cost(config, mesh, layers)
    report["train_step"] = analyse(compiled, log.text, chip, model_flops, seconds, cost=step_cost)
    if sampler and not isinstance(setup.model, ImageToImage):
        report["sampler"] = _compile_sampler(setup, chip)
    return report


def _compile_sampler(setup, chip) -> dict:
    """The sampler as `train.sampling.draw` jits it, for the ``train.num_samples`` samples of a training grid, on
    the trained params' shardings."""
    model, cfg = setup.model, setup.config
    num = max(cfg.train.num_samples, 1)
    conditions = grid_conditions(model.spec, num)

    def fn(p, ms, key, c):
        return model.sample(sampling_params(model, p, ms), key, num, **c)

    st = setup.abstract_state
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=meshlib.replicated(setup.mesh))
    conds = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype, sharding=meshlib.replicated(setup.mesh))
             for k, v in conditions.items()}
    with captured_stderr() as log:
        t0 = time.perf_counter()
        compiled = jax.jit(fn, out_shardings=meshlib.replicated(setup.mesh)).lower(
            st["params"], st["model_state"], key, conds).compile()
        seconds = time.perf_counter() - t0
    rep = analyse(compiled, log.text, chip, None, seconds)
    rep["num_samples"] = num
    return rep


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def describe(report: dict, where: str) -> str:
    """The report as a few lines of text."""
    mesh = ",".join(f"{k}={v}" for k, v in report["mesh"].items())
    lines = [f"{report['experiment']} on {where}, mesh {mesh}, global batch {report['global_batch']}, "
             f"{report['params'] / 1e6:,.1f}M params"]
    chip = report.get("chip")
    for name in ("train_step", "sampler"):
        rep = report.get(name)
        if rep is None:
            continue
        mem = rep["memory_bytes"]
        title = "train step" if name == "train_step" else f"sampler ({rep['num_samples']} samples)"
        if "total" in mem:
            of = f" of {_gib(chip['hbm_bytes'])} GiB HBM ({100 * rep['hbm_fraction']:.1f}%)" if chip else ""
            lines.append(f"{title}: {_gib(mem['total'])} GiB per chip{of}: arguments {_gib(mem['arguments'])}, "
                         f"outputs {_gib(mem['outputs'])} ({_gib(mem.get('aliased', 0))} aliased), temporaries "
                         f"{_gib(mem['temporaries'])}, code {_gib(mem.get('generated_code', 0))}; compiled in "
                         f"{rep['compile_seconds']:.0f} s")
        else:
            lines.append(f"{title}: compiled in {rep['compile_seconds']:.0f} s (no memory analysis on this backend)")
        if "flops" in rep:
            lines.append(f"  {rep['flops']:.3g} FLOP and {rep.get('bytes_accessed', 0):.3g} bytes accessed per chip")
        coll = ", ".join(f"{k} x{v['count']} ({v['bytes'] / 2**20:,.1f} MiB)" for k, v in rep["collectives"].items())
        lines.append(f"  collectives: {coll or 'none'}")
        roof = rep.get("roofline")
        if roof:
            mfu = f", MFU {100 * roof['mfu']:.0f}%" if "mfu" in roof else ""
            lines.append(f"  roofline ({chip['peak_flops'] / 1e12:.0f} TFLOP/s, {chip['hbm_bytes_per_s'] / 1e9:,.0f} "
                         f"GB/s per chip, no communication): {1e3 * roof['step_seconds']:.2f} ms, {roof['bound']}-"
                         f"bound{mfu}")
        lines.append(f"  involuntary full rematerializations: {rep['involuntary_rematerializations']}")
    return "\n".join(lines)
