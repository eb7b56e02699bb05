"""KV-cache sampling against full recompute, 500 new tokens, batch 1 and 16.

    python benchmarks/sampling.py [--out FILE.json]

The model has the `gpt-shakespeare-char-cpu` shapes (4 layers, width 128) with a 1024-token context, so that a
16-token prompt plus 500 new tokens fit. Three ways to sample, tokens/s counting new tokens:
- `kv_cache`: one token per step against a cache of the 516 positions (`GPT.generate`, one jitted `lax.scan`);
- `recompute` (`use_cache=False`, one jitted `lax.scan`): a forward pass over a fixed 516-token window per new
  token (a compiled loop needs static shapes), which overstates what recomputation has to cost;
- `recompute_growing`: nanoGPT's loop without a cache, a forward pass over the prefix so far per new token (its
  length padded up to a multiple of 64: one compile per bucket), from Python; the fair baseline.
The paths give the same tokens for the same key (checked here and, for the first two, in tests/test_gpt.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import emit  # noqa: E402

from aigc_jax.models.autoregressive import GPT, GPTConfig, sampling  # noqa: E402

BUCKET = 64


def growing_prefix(model, params, prompt, key, new: int):
    """Sampling without a cache, nanoGPT-style: the forward pass over the prefix so far for every new token.
    Returns ``run()`` -> tokens ``[B, P + new]``, with every padded length already compiled."""
    cfg = model.config
    fwd = jax.jit(lambda p, ctx, i: model.apply(p, ctx)[:, i])  # one compile per padded length
    pick = jax.jit(lambda logits, i: sampling.choose(logits, jax.random.fold_in(key, i), cfg.temperature,
                                                     cfg.top_k, cfg.top_p))
    b, p = prompt.shape

    def padded(length):
        return min(-(-length // BUCKET) * BUCKET, p + new)

    for size in sorted({padded(p + i) for i in range(new)}):  # compile outside the timing
        jax.block_until_ready(pick(fwd(params, np.zeros((b, size), np.int32), 0), 0))

    def run():
        buf = np.zeros((b, p + new), np.int32)
        buf[:, :p] = np.asarray(prompt)
        for i in range(new):
            length = p + i
            buf[:, length] = np.asarray(pick(fwd(params, buf[:, :padded(length)], length - 1), i))
        return buf

    return run


def timed_once(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t, out


def timed(fn, *args, reps=2):
    jax.block_until_ready(fn(*args))  # compile
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=500)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    cfg = GPTConfig(vocab_size=65, context=1024, layers=4, heads=4, width=128, temperature=1.0)
    model = GPT(cfg)
    params, _ = model.init(jax.random.key(0))
    result = {"jax": jax.__version__, "model": "4 layers, 4 heads, width 128, context 1024", "new_tokens": args.new,
              "prompt": 16, "batches": {}}
    for batch in (1, 16):
        prompt = jax.random.randint(jax.random.key(1), (batch, 16), 0, 65)
        cached = jax.jit(lambda p, pr, k: model.generate(p, pr, k, args.new, use_cache=True))
        full = jax.jit(lambda p, pr, k: model.generate(p, pr, k, args.new, use_cache=False))
        t_cache, a = timed(cached, params, prompt, jax.random.key(2))
        # The slow paths run once each, compiled beforehand (a run at batch 16 takes minutes).
        t_full, b = timed_once(full.lower(params, prompt, jax.random.key(2)).compile(), params, prompt,
                               jax.random.key(2))
        t_grow, c = timed_once(growing_prefix(model, params, prompt, jax.random.key(2), args.new))
        a = np.asarray(a)
        result["batches"][str(batch)] = {
            "kv_cache_tokens_per_sec": round(batch * args.new / t_cache, 1),
            "recompute_tokens_per_sec": round(batch * args.new / t_full, 1),
            "recompute_growing_tokens_per_sec": round(batch * args.new / t_grow, 1),
            "speedup_vs_recompute": round(t_full / t_cache, 2),
            "speedup_vs_recompute_growing": round(t_grow / t_cache, 2),
            "same_tokens": bool(np.array_equal(a, np.asarray(b)) and np.array_equal(a, c)),
        }
    emit(result, args.out)


if __name__ == "__main__":
    main()
