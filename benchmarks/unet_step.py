"""The U-Net's train step and batch-500 forward on this host, for the shapes the MNIST diffusion configs were chosen
from (base width, levels, blocks, patch size): the numbers behind flow-mnist's 1M-parameter patch-2 default.

    python -m benchmarks.unet_step --out benchmarks/results/unet_step_cpu.json

A step is value_and_grad of the mean squared error plus an Adam update at batch 128 (jit, best of 4 after a
warm-up); the forward is one call at batch 500 (what a sampler step costs in evaluation).
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from aigc_jax.nn.unet import UNet
from benchmarks._report import emit

SHAPES = [  # channels, channel_mults, num_res_blocks, patch_size
    (32, (1, 2, 2), 1, 1), (32, (1, 2, 2), 2, 1), (16, (1, 2, 4), 1, 1),
    (32, (1, 2), 2, 2), (48, (1, 2), 2, 2), (64, (1, 2), 2, 2),
]


def measure(ch, mults, blocks, patch, batch=128):
    net = UNet((28, 28, 1), ch, mults, blocks, (7,), 0.1, 10, patch_size=patch, rngs=nnx.Rngs(0))
    graph, params = nnx.split(net)
    opt = optax.adam(1e-3)

    def loss(p, x, t, y, k):
        return jnp.mean((nnx.merge(graph, p)(x, t, y, k) - x) ** 2)

    @jax.jit
    def step(p, o, x, t, y, k):
        value, g = jax.value_and_grad(loss)(p, x, t, y, k)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o, value

    x = jax.random.normal(jax.random.key(0), (batch, 28, 28, 1))
    t, y, k = jnp.arange(batch) * 1.0, jnp.arange(batch) % 11, jax.random.key(1)
    p, o, v = step(params, opt.init(params), x, t, y, k)
    jax.block_until_ready(v)
    best = float("inf")
    for _ in range(4):
        t0 = time.perf_counter()
        p, o, v = step(p, o, x, t, y, k)
        jax.block_until_ready(v)
        best = min(best, time.perf_counter() - t0)
    fwd = jax.jit(lambda p, x, t, y: nnx.merge(graph, p)(x, t, y))
    x5, t5, y5 = jnp.ones((500, 28, 28, 1)), jnp.ones(500), jnp.zeros(500, jnp.int32)
    jax.block_until_ready(fwd(params, x5, t5, y5))
    t0 = time.perf_counter()
    jax.block_until_ready(fwd(params, x5, t5, y5))
    return {"channels": ch, "channel_mults": list(mults), "num_res_blocks": blocks, "patch_size": patch,
            "params": sum(a.size for a in jax.tree.leaves(params)), "step_seconds_b128": round(best, 3),
            "forward_seconds_b500": round(time.perf_counter() - t0, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="")
    args = p.parse_args()
    rows = []
    for shape in SHAPES:
        rows.append(measure(*shape))
        print(rows[-1], file=sys.stderr, flush=True)
    emit({"benchmark": "unet_step", "rows": rows}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
