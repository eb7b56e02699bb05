"""`gpt-shakespeare-char-cpu` trained by our trainer and by the PyTorch twin in lockstep, nanoGPT's recipe.

    python benchmarks/gpt_lockstep.py [--seed 0] [--steps 2000] [--out FILE.json]

Both start from the twin's weights (``torch.manual_seed(1337 + seed)``, nanoGPT's init) and read the same batches
(12 windows of 65 characters at uniform random offsets of the training split, nanoGPT's ``get_batch``); the twin
sets nanoGPT's learning rate (``get_lr``) before each step, ours uses the experiment's Optax schedule. It prints
the two losses every 100 steps, the largest step-by-step difference, and the validation loss of both models on
the whole validation split (non-overlapping 64-token windows, as `aigc-jax eval`). It answers whether a gap to
nanoGPT's reported number comes from the implementation or from the seed. Needs the `bench` or `test` extra.
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

from aigc_jax.api import get_config  # noqa: E402
from aigc_jax.data import sources  # noqa: E402
from aigc_jax.parallel import mesh as meshlib  # noqa: E402
from aigc_jax.train.setup import build_setup  # noqa: E402
from benchmarks._report import emit  # noqa: E402
from benchmarks.torch_gpt import make_twin, nanogpt_lr, to_jax_params  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    import torch

    cfg = get_config("gpt-shakespeare-char-cpu", [f"train.steps={args.steps}"])
    m = cfg.model
    setup = build_setup(cfg)
    train = sources.for_experiment(cfg, "train").tokens
    val = sources.for_experiment(cfg, "validation").tokens
    window = m.context + 1

    torch.manual_seed(1337 + args.seed)
    tstep, _, _ = make_twin(m.vocab_size, m.context, m.layers, m.heads, m.width, threads=2)
    state = dict(setup.init_state(0))
    start = to_jax_params(tstep.model, m.layers, m.heads)
    params = jax.tree.map(lambda a, ref: jax.device_put(jnp.asarray(a), ref.sharding), start, state["params"])
    state["params"] = params
    state["opt_state"] = {"gpt": setup.optimizers["gpt"].init(params["gpt"])}

    rng = np.random.default_rng(args.seed)
    log, max_diff, t0 = [], 0.0, time.perf_counter()
    for it in range(args.steps):
        toks = np.stack([train[i:i + window] for i in rng.integers(0, len(train) - window, cfg.data.batch_size)])
        toks = toks.astype(np.int32)
        for group in tstep.opt.param_groups:
            group["lr"] = nanogpt_lr(it, decay_iters=args.steps)
        torch_loss = float(tstep(toks).detach())
        state, metrics = setup.train_step(state, meshlib.to_global({"tokens": toks}, setup.batch_sharding))
        jax_loss = float(metrics["loss"])
        max_diff = max(max_diff, abs(jax_loss - torch_loss))
        if it % 100 == 0 or it == args.steps - 1:
            log.append({"step": it, "torch": round(torch_loss, 6), "jax": round(jax_loss, 6)})
            print(log[-1], file=sys.stderr, flush=True)

    starts = np.arange((len(val) - window) // m.context + 1) * m.context
    nll = jax.jit(lambda p, t: setup.model.eval_metrics(p, {}, {"tokens": t}, None)["loss"])  # per window
    jax_params = state["params"]
    tot_j = tot_t = 0.0
    with torch.no_grad():
        for b in range(0, len(starts), 96):
            toks = np.stack([val[i:i + window] for i in starts[b:b + 96]]).astype(np.int32)
            tot_j += float(nll(jax_params, jnp.asarray(toks)).sum()) * m.context
            tt = torch.from_numpy(toks.astype(np.int64))
            tot_t += float(tstep.model(tt[:, :-1], tt[:, 1:])) * tt[:, 1:].numel()
    count = len(starts) * m.context
    emit({"experiment": "gpt-shakespeare-char-cpu", "seed": args.seed, "torch_seed": 1337 + args.seed,
          "steps": args.steps, "max_abs_train_loss_diff": max_diff,
          "val_loss_jax": tot_j / count, "val_loss_torch": tot_t / count,
          "val_windows": int(len(starts)), "wall_s": round(time.perf_counter() - t0, 1), "log": log}, args.out)


if __name__ == "__main__":
    main()
