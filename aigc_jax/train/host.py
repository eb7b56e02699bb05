"""Fast defaults on a CPU host: one XLA device per core with the batch split across them, and bfloat16 compute
(float32 master weights) where the CPU has native bfloat16 arithmetic and the model offers it.

XLA:CPU runs one program per device; on a single device a small model's many small ops mostly run on one
thread, so a data-parallel mesh over one device per core keeps every core busy
(``--xla_force_host_platform_device_count``, which must be set before JAX's backend starts:
`prepare_cpu_devices`). Models whose step is dominated by large matmuls or convolutions, which one device
already threads over the cores, get slower split (a model class declares ``cpu_data_parallel``). bfloat16
matmuls run on AVX512-BF16 / AMX units at several times the float32 rate; hosts without them emulate bfloat16
and gain nothing, so it is chosen only where ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16``. What was
measured for each choice: benchmarks/README.md ("Fast by default").

The CLI also keeps JAX's persistent compilation cache in ``$AIGC_JAX_CACHE/xla`` (`use_compilation_cache`), so
that running a command again skips its compiles.

`aigc-jax train` applies them unless ``--no-fast-defaults`` (or ``AIGC_JAX_FAST_DEFAULTS=0``): the device split
where the user chose no mesh and no device count, bfloat16 where the user chose no compute dtype and the run does
not resume one trained at another precision.
"""

from __future__ import annotations

import os
from pathlib import Path

DEVICE_FLAG = "xla_force_host_platform_device_count"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def native_bf16() -> bool:
    """Whether the CPU has bfloat16 arithmetic units (Linux: the flags in /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return any(f in flags for f in BF16_FLAGS)


def cpu_only() -> bool:
    """Whether JAX will run on the CPU: ``JAX_PLATFORMS`` says so (read before JAX starts, so an unset variable
    on a machine with an accelerator is not known here; the device split only affects the CPU backend anyway)."""
    return os.environ.get("JAX_PLATFORMS", "").strip().lower() in ("", "cpu")


def backend_started() -> bool:
    """Whether a JAX backend exists in this process already (then XLA_FLAGS can no longer change it)."""
    import sys

    if "jax" not in sys.modules:
        return False
    from jax._src import xla_bridge

    return xla_bridge.backends_are_initialized()


def splits_well(config) -> bool:
    """Whether the experiment's model runs faster with its batch over one CPU device per core (its class's
    ``cpu_data_parallel``, measured per family)."""
    from aigc_jax.core.registry import model_entry

    return bool(model_entry(config.model_name).model_cls.cpu_data_parallel)  # declared by GenerativeModel


def data_ways(batch_size: int, cores: int) -> int:
    """The most devices, at most one per core, that split ``batch_size`` evenly."""
    return max(d for d in range(1, max(cores, 1) + 1) if batch_size % d == 0)


def prepare_cpu_devices(count: int) -> int:
    """Before JAX's backend starts: ``count`` XLA CPU devices, unless ``XLA_FLAGS`` already sets a count, JAX is
    told to run elsewhere, or the backend has started. Returns the count set (0: nothing changed)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if count < 2 or DEVICE_FLAG in flags or not cpu_only() or backend_started():
        return 0
    os.environ["XLA_FLAGS"] = f"{flags} --{DEVICE_FLAG}={count}".strip()
    return count


def offers_bf16(model_config) -> bool:
    """Whether the fast defaults may give this model config ``compute_dtype=bfloat16`` (its declaration,
    `ModelConfig.bf16_by_default`)."""
    return model_config.bf16_by_default


def bf16_override(config, bf16: bool | None = None) -> list[str]:
    """``["model.compute_dtype=bfloat16"]`` for a float32 model that offers bfloat16 compute on a CPU with native
    bfloat16 (``bf16``: that fact, default read from /proc/cpuinfo), else ``[]``."""
    if not offers_bf16(config.model) or config.model.declared_compute_dtype != "float32":
        return []
    return ["model.compute_dtype=bfloat16"] if (native_bf16() if bf16 is None else bf16) else []


def describe(ways: int, overrides: list[str]) -> str:
    """The start-up line: what the fast defaults chose ("" for nothing)."""
    said = [f"the batch split over {ways} XLA devices (one per core)"] if ways > 1 else []
    if "model.compute_dtype=bfloat16" in overrides:
        said.append("bfloat16 compute with float32 master weights (the CPU has native bfloat16)")
    if not said:
        return ""
    return "fast defaults for this CPU: " + "; ".join(said) + " (--no-fast-defaults turns them off)"


def fast_config(experiment: str, cfg, overrides: list[str]):
    """``(cfg with this CPU's choices, the start-up line)``: one XLA device per core (as many as split the batch
    evenly) for models that run faster so, unless a mesh or a device count was chosen, and bfloat16 compute
    unless ``overrides`` choose a compute dtype (or keep the one of a resumed run). Call it before JAX's backend
    starts (the device split is fixed then); off a CPU, ``cfg`` unchanged."""
    from aigc_jax.api import get_config

    ways = 0
    if not cfg.mesh and cfg.train.population == 1 and splits_well(cfg):
        ways = prepare_cpu_devices(data_ways(cfg.data.batch_size, cpu_cores()))
    import jax

    if jax.devices()[0].platform != "cpu":
        return cfg, ""
    extra = [] if any(o.startswith("model.compute_dtype=") for o in overrides) else bf16_override(cfg)
    return (get_config(experiment, [*overrides, *extra]) if extra else cfg), describe(ways, extra)


def use_compilation_cache() -> str:
    """Point JAX's persistent compilation cache at ``$AIGC_JAX_CACHE/xla`` (default ``~/.cache/aigc_jax/xla``)
    unless one is configured already (``JAX_COMPILATION_CACHE_DIR``, ``jax.config``) or ``AIGC_JAX_COMPILE_CACHE=0``.
    A command run again with the same shapes loads its compiled programs instead of compiling them (the
    train step, init, evaluation and sampling programs: several seconds of a short CPU run). Entries are keyed by
    the program, the compiler version and its flags, so a hit is the identical executable. Returns the folder
    ("" when off or chosen elsewhere)."""
    import jax

    if os.environ.get("AIGC_JAX_COMPILE_CACHE", "1") == "0" or jax.config.jax_compilation_cache_dir:
        return ""
    folder = Path(os.environ.get("AIGC_JAX_CACHE", "~/.cache/aigc_jax")).expanduser() / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ""  # a read-only home: compile as before
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return str(folder)

