"""`aigc-jax export` for every generator experiment: the artifact's size, its lowering time, and its first call
(deserialize, compile, one example) on this host, lowered for cpu, cuda and tpu.

    python -m benchmarks.export_all --out benchmarks/results/export_cpu.json

Each experiment's default configuration with freshly initialised weights plus a little noise on every float
array, through the same
`aigc_jax.export.export_sampler` that `aigc-jax export` calls on a trained run; the default sampler settings.
The noise matters: StableHLO stores an array of one repeated value (a fresh zero bias, a unit norm scale, a
zero-initialised output layer) as a single "splat" element, so fresh weights would understate a trained
artifact's size; with every value distinct the size is that of a trained run.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from benchmarks._report import emit


def _unsplat(tree):
    """Every floating array plus 1e-3 standard normal noise (its own key per leaf), integer arrays unchanged."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    out = [x + 1e-3 * jax.random.normal(k, x.shape, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
           for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    p.add_argument("--out", default="")
    args = p.parse_args()
    from aigc_jax.core.contract import sampling_params
    from aigc_jax.core.registry import build_model, get_config, list_experiments
    from aigc_jax.export import export_sampler

    names = args.only.split(",") if args.only else list_experiments()
    rows = {}
    for name in names:
        cfg = get_config(name)
        model = build_model(cfg)
        params, state = model.init(jax.random.key(0))
        blob, d = export_sampler(model, _unsplat(sampling_params(model, params, state)))
        rows[name] = {k: d[k] for k in ("size_bytes", "lowering_seconds", "first_call_compile_seconds",
                                        "settings", "platforms")}
        rows[name]["inputs"] = {i["name"]: f"{i['dtype']}[{', '.join(map(str, i['shape']))}]" for i in d["inputs"]}
        print(name, rows[name], file=sys.stderr, flush=True)
        del blob
    emit({"benchmark": "export", "jax": jax.__version__, "experiments": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
