"""Causal attention, forward + backward, per layer: `aigc_jax.nn.attention.causal_attention` with its hand-written
VJP (traced inside `reverse_mode_kernels`, as the train step does) against the automatic derivative of
`jax.nn.dot_product_attention`, both jitted, same inputs.

    python benchmarks/attention_cpu.py [--out FILE.json]

Shapes: the `gpt-shakespeare-char-cpu` layer (batch 12, context 64, 4 heads of 32) and the larger CPU size of
`gpt_vs_torch.py` (batch 16, context 128, 6 heads of 32). Prints milliseconds per call (best of 5 rounds of 100),
the ratio, and the largest difference between the two paths' outputs and gradients.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import LoadAverage, best_seconds, emit  # noqa: E402

from aigc_jax.nn.attention import causal_attention  # noqa: E402
from aigc_jax.nn.kernels import reverse_mode_kernels  # noqa: E402

SHAPES = {"gpt-shakespeare-char-cpu": (12, 64, 4, 32), "cpu-large": (16, 128, 6, 32)}


def reference(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True)


def fwd_bwd(fn):
    """The gradients of ``sum(fn(q, k, v) * do)``: the forward pass and the backward pass, jitted, with the
    hand-written VJPs of `aigc_jax.nn` switched on inside the jitted function."""

    def grads(q, k, v, do):
        with reverse_mode_kernels():
            return jax.vjp(fn, q, k, v)[1](do)

    return jax.jit(grads)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    load = LoadAverage()
    result = {"jax": jax.__version__, "backend": jax.default_backend(), "shapes": {}}
    for name, shape in SHAPES.items():
        q, k, v, do = (jax.random.normal(key, shape, jnp.float32) for key in jax.random.split(jax.random.key(0), 4))
        ours, ref = fwd_bwd(causal_attention), fwd_bwd(reference)
        outs = [causal_attention(q, k, v), *ours(q, k, v, do)]
        refs = [reference(q, k, v), *ref(q, k, v, do)]
        diff = max(float(jnp.abs(a - b).max()) for a, b in zip(outs, refs, strict=True))
        t_ours, t_ref = (1e3 * best_seconds(f, (q, k, v, do), rounds=5, reps=100) for f in (ours, ref))
        result["shapes"][name] = {"b_t_n_h": shape, "ours_ms": round(t_ours, 3),
                                  "dot_product_attention_ms": round(t_ref, 3),
                                  "speedup": round(t_ref / t_ours, 2), "max_abs_diff": diff}
    result["load_avg_1m"] = load.record()
    emit(result, args.out)


if __name__ == "__main__":
    main()
