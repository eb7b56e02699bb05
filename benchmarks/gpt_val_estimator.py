"""How nanoGPT's validation estimate relates to the whole-split loss, on a trained character-level GPT run.

    python benchmarks/gpt_val_estimator.py WORKDIR [--draws 10000] [--out FILE.json]

nanoGPT reports the mean loss of 20 batches of 12 windows whose starts are drawn uniformly from every position its
``get_batch`` can draw (``randint(len - context)``); `aigc-jax eval` scores the split once, in non-overlapping
windows. This script scores the run's validation split both ways: the aligned windows, and every window nanoGPT can
draw (the estimator's expected value, exactly), then the spread of one 240-window estimate over ``--draws``
resamplings. It answers whether nanoGPT's figure is biased against ours, and how far one estimate moves.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigc_jax.api import restore_run  # noqa: E402
from aigc_jax.data import sources  # noqa: E402
from benchmarks._report import emit  # noqa: E402

CHUNK, WINDOWS_PER_ESTIMATE = 512, 20 * 12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--draws", type=int, default=10000)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    setup, state, step = restore_run(args.workdir)
    cfg = setup.config
    if cfg.model_name != "gpt":
        sys.exit(f"error: {args.workdir} is a {cfg.model_name!r} run; this script scores GPT runs")
    val = sources.for_experiment(cfg, "validation").tokens
    context = cfg.model.context
    params = jax.device_get(state["params"])
    nll = jax.jit(lambda p, t: setup.model.eval_metrics(p, {}, {"tokens": t}, None)["loss"])  # per window

    def window_losses(starts):  # mean next-token NLL of each window [context + 1 tokens]
        out = []
        for b in range(0, len(starts), CHUNK):
            part = starts[b:b + CHUNK]
            toks = np.stack([val[i:i + context + 1] for i in part]).astype(np.int32)
            toks = np.pad(toks, ((0, CHUNK - len(part)), (0, 0)))  # one compiled shape
            out.append(np.asarray(nll(params, jnp.asarray(toks)))[:len(part)])
        return np.concatenate(out)

    t0 = time.perf_counter()
    aligned = window_losses(np.arange((len(val) - context - 1) // context + 1) * context)
    every = window_losses(np.arange(len(val) - context))
    rng = np.random.default_rng(0)
    estimates = np.array([every[rng.integers(0, len(every), WINDOWS_PER_ESTIMATE)].mean()
                          for _ in range(args.draws)])
    emit({"experiment": cfg.name, "seed": cfg.train.seed, "step": int(step),
          "whole_split_aligned": float(aligned.mean()), "aligned_windows": int(len(aligned)),
          "estimator_expectation": float(every.mean()), "drawable_windows": int(len(every)),
          "estimator_sd": float(estimates.std()), "estimator_p05_p95": [float(q) for q in
                                                                        np.quantile(estimates, [0.05, 0.95])],
          "draws": args.draws, "wall_s": round(time.perf_counter() - t0, 1)}, args.out)


if __name__ == "__main__":
    main()
