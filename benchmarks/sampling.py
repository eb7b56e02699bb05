"""KV-cache sampling against full recompute, 500 new tokens, batch 1 and 16.

    python benchmarks/sampling.py [--out FILE.json]

The model has the `gpt-shakespeare-char-cpu` shapes (4 layers, width 128) with a 1024-token context, so that a
16-token prompt plus 500 new tokens fit: the cached path runs one token per step against the cache; the recompute
path runs the whole prefix (all positions so far, padded to a fixed window inside one compiled loop) per new token,
which is what sampling without a cache costs. Both are one jitted `lax.scan`; tokens/s counts new tokens.
The two paths give the same tokens for the same key (checked here and in tests/test_gpt.py).
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

from aigc_jax.models.autoregressive import GPT, GPTConfig  # noqa: E402


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
        t_full, b = timed(full, params, prompt, jax.random.key(2), reps=1)
        same = bool(np.array_equal(np.asarray(a), np.asarray(b)))
        result["batches"][str(batch)] = {
            "kv_cache_tokens_per_sec": round(batch * args.new / t_cache, 1),
            "recompute_tokens_per_sec": round(batch * args.new / t_full, 1),
            "speedup": round(t_full / t_cache, 2),
            "same_tokens": same,
        }
    emit(result, args.out)


if __name__ == "__main__":
    main()
