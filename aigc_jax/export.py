"""Exported generators: a trained run's sampler as a `jax.export` artifact that runs with JAX alone.

``export_run(workdir, out_dir)`` writes

- ``out_dir/sample.jaxexport``: the serialized StableHLO of ``f(key_data, *conditions) -> samples``, lowered for
  the chosen platforms (default cpu, cuda and tpu), with the trained sampling params closed over as constants;
- ``out_dir/manifest.json``: every input's name, dtype and shape (``"b"`` for the symbolic batch), the output's, the
  sampler settings baked in, the experiment, checkpoint step, config hash, platforms, the artifact's size and the
  first call's compile time on this host.

Inputs are per-example key data ``uint32[b, 2]`` (``jax.random.key_data(jax.random.split(key, b))``) and each
declared array condition as ``[b, ...]`` (a label ``int32[b]``, a prompt ``int32[b, P]`` of the length chosen at
export, input images ``float32[b, H, W, C]``); a label that the model takes optionally (a conditional diffusion
model) is an input with the null class ``num_classes`` meaning "no label". Row i of the output equals
``aigc_jax.load(workdir).sample_fn(params, key_i, 1, **conditions_i, **settings)[0]``: the function is a
``jax.vmap`` over examples of the library's own sampler.

To run it (``jax`` and ``flatbuffers`` installed, nothing else)::

    import jax, numpy as np
    exp = jax.export.deserialize(open("OUT_DIR/sample.jaxexport", "rb").read())
    keys = jax.random.key_data(jax.random.split(jax.random.key(0), 16))
    images = exp.call(keys)                       # plus one [16, ...] array per condition, in manifest order

Serialized modules are build products: JAX reads them for about six months; export again from the run after that.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.core.errors import UserError

ARTIFACT = "sample.jaxexport"
MANIFEST = "manifest.json"
PLATFORMS = ("cpu", "cuda", "tpu")


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} exists and is not an empty folder: export into a new one (nothing written)")
    parent = out_dir.resolve().parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write into {parent} (nothing written)")


def _inputs(model, prompt_length: int | None) -> list[dict]:
    """The array inputs after the key data: one per declared array condition, in declaration order."""
    inputs = []
    for c in model.spec.conditions:
        if c.static:
            continue
        if c.kind == "label":
            inputs.append({"name": c.name, "dtype": "int32", "shape": ["b"], "optional": not c.required,
                           "doc": f"class ids 0..{c.num_classes - 1}"
                                  + ("" if c.required else f", or {c.num_classes} for none")})
        elif c.kind == "tokens":
            p = prompt_length or 1
            inputs.append({"name": c.name, "dtype": "int32", "shape": ["b", p],
                           "doc": f"prompt token ids in 0..{c.vocab_size - 1}"})
        elif c.kind == "image":
            inputs.append({"name": c.name, "dtype": "float32", "shape": ["b", *c.shape],
                           "doc": "input images in [0, 1]"})
    if prompt_length is not None and not any(c.kind == "tokens" for c in model.spec.conditions):
        raise UserError("--prompt-length is for token models (a prompt input); this model takes none")
    return inputs


def _per_example(model, params, inputs: list[dict], settings: dict):
    """``f(key_data [b, 2], *conditions)``: the library's sampler with ``num = 1`` for each example."""
    def one(key_data, *values):
        # An optional label's null class reaches the model as a label: its unconditional prediction.
        conditions = {spec["name"]: v[None] for spec, v in zip(inputs, values, strict=True)}
        return model.sample(params, jax.random.wrap_key_data(key_data), 1, **conditions, **settings)[0]

    def f(key_data, *values):
        return jax.vmap(one)(key_data, *values)

    return f


def export_sampler(model, params, *, settings: dict | None = None, prompt_length: int | None = None,
                   platforms: tuple[str, ...] = PLATFORMS) -> tuple[bytes, dict]:
    """The serialized sampler of ``model`` with ``params`` (sampling params, as `aigc_jax.load` gives) closed over,
    and the manifest's description of it (inputs, outputs, settings, size, timings; module docstring)."""
    from aigc_jax.core.contract import validate_settings

    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
        raise UserError(f"platforms {', '.join(unknown) or '(none)'}: expected some of {', '.join(PLATFORMS)}")
    if prompt_length is not None and prompt_length < 1:
        raise UserError(f"--prompt-length {prompt_length}: expected a positive integer")
    settings = validate_settings(model, dict(settings or {}))
    inputs = _inputs(model, prompt_length)
    f = _per_example(model, params, inputs, settings)
    (b,) = jax.export.symbolic_shape("b")
    specs = [jax.ShapeDtypeStruct((b, 2), jnp.uint32)]
    specs += [jax.ShapeDtypeStruct(tuple(b if d == "b" else d for d in i["shape"]), jnp.dtype(i["dtype"]))
              for i in inputs]
    t0 = time.perf_counter()
    try:
        exported = jax.export.export(jax.jit(f), platforms=tuple(platforms))(*specs)
    except (ValueError, TypeError, NotImplementedError) as e:
        raise UserError(f"cannot export this sampler: {str(e).splitlines()[0]}") from None
    blob = bytes(exported.serialize())
    lower_s = time.perf_counter() - t0
    out_spec = exported.out_avals[0]
    # The first call here: deserialize, compile and run one example (what a user's first call costs).
    backend = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    first_call_s = None
    if backend in platforms:
        t0 = time.perf_counter()
        rehydrated = jax.export.deserialize(blob)
        probe = [np.zeros((1, *i["shape"][1:]), i["dtype"]) for i in inputs]
        key_data = np.asarray(jax.random.key_data(jax.random.split(jax.random.key(0), 1)))
        jax.block_until_ready(rehydrated.call(key_data, *probe))
        first_call_s = round(time.perf_counter() - t0, 3)
    description = {
        "format": "jax.export", "artifact": ARTIFACT, "jax_version": jax.__version__,
        "calling_convention_version": exported.calling_convention_version,
        "platforms": list(exported.platforms),
        "inputs": [{"name": "key_data", "dtype": "uint32", "shape": ["b", 2],
                    "doc": "jax.random.key_data(jax.random.split(key, b)): one threefry key per example"},
                   *inputs],
        "outputs": [{"name": "samples", "dtype": str(out_spec.dtype),
                     "shape": ["b" if not isinstance(d, int) else d for d in out_spec.shape],
                     "doc": "images in [0, 1] (NHWC)" if model.spec.output == "image" else "token ids"}],
        "settings": settings,
        "size_bytes": len(blob),
        "lowering_seconds": round(lower_s, 3),
        "first_call_compile_seconds": first_call_s,  # deserialize + compile + one example, on this host
        "first_call_platform": backend,
    }
    return blob, description


def export_run(workdir: str | Path, out_dir: str | Path, *, step: int | None = None, member: int | None = None,
               settings: dict | None = None, prompt_length: int | None = None,
               platforms: tuple[str, ...] = PLATFORMS, progress: bool = True) -> dict:
    """Export ``workdir``'s sampler (module docstring) into the new or empty folder ``out_dir``; returns the
    manifest. ``settings`` are baked in (their declared defaults where not given); ``prompt_length`` fixes a token
    model's prompt input length (default 1)."""
    from aigc_jax import api
    from aigc_jax.core.registry import build_model

    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    loaded = api.load(workdir, step=step, member=member)
    if progress:
        print(f"lowering the sampler of {workdir} (step {loaded.step}) for {', '.join(platforms)}", flush=True)
    blob, description = export_sampler(build_model(loaded.config), loaded.params, settings=settings,
                                       prompt_length=prompt_length, platforms=platforms)
    cfg_path = Path(workdir) / "config.json"
    manifest = {"experiment": loaded.config.name, "step": loaded.step,
                "config_sha256": hashlib.sha256(cfg_path.read_bytes()).hexdigest() if cfg_path.exists() else None,
                **description}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.resolve().parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        (tmp / ARTIFACT).write_bytes(blob)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked): replaced by the finished folder
        os.replace(tmp, out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write {out_dir}: {e.strerror or e} (nothing written)") from None
    return manifest
