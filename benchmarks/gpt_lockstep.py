"""`gpt-shakespeare-char-cpu` trained by our trainer and by the PyTorch twin in lockstep, nanoGPT's recipe.

    python benchmarks/gpt_lockstep.py [--seed 0] [--steps 2000] [--out FILE.json]

Both start from the twin's weights (``torch.manual_seed(1337 + seed)``, nanoGPT's init) and read the same batches
(12 windows of 65 characters at uniform random offsets of the training split, nanoGPT's ``get_batch``); the twin
sets nanoGPT's learning rate (``get_lr``) before each step, ours uses the experiment's Optax schedule. It prints
the two losses every 100 steps, the largest step-by-step difference, and the validation loss of both models on
the whole validation split (non-overlapping 64-token windows, as `aigc-jax eval`). It answers whether a gap to
nanoGPT's reported number comes from the implementation or from the seed. Needs the `bench` or `test` extra.

``--stream nanogpt`` replays nanoGPT's own run instead (``train.py`` with the README's CPU flags, ``eval_interval``
250, ``eval_iters`` 20): the start weights are the ones nanoGPT's model draws after ``torch.manual_seed(1337 + seed)``
(`nanogpt_start_weights`), and one torch generator continued from there yields, in nanoGPT's order, the first
training batch, the 40 evaluation batches at iteration 0, every later training batch (drawn before the step it
feeds), and the 40 evaluation batches every 250 iterations. At the last iteration it also reports nanoGPT's own
estimate: the mean loss of its 20 validation batches of 12 random windows.
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
from benchmarks.torch_gpt import make_twin, nanogpt_lr, nanogpt_start_weights, to_jax_params  # noqa: E402

EVAL_INTERVAL, EVAL_ITERS = 250, 20  # nanoGPT's shakespeare_char config and its README's CPU flags


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--stream", choices=("numpy", "nanogpt"), default="numpy",
                    help="batches from numpy's generator (seeded by --seed) or nanoGPT's own torch stream")
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
    nanogpt = args.stream == "nanogpt"
    if nanogpt:
        start_sd = nanogpt_start_weights(m.vocab_size, m.context, m.layers, m.width)
        gen = torch.Generator()
        gen.set_state(torch.get_rng_state())  # where nanoGPT's first get_batch starts
    tstep, _, _ = make_twin(m.vocab_size, m.context, m.layers, m.heads, m.width, threads=2)
    if nanogpt:
        tstep.model.load_state_dict(start_sd)
    state = dict(setup.init_state(0))
    start = to_jax_params(tstep.model, m.layers, m.heads, m.padded_vocab)
    params = jax.tree.map(lambda a, ref: jax.device_put(jnp.asarray(a), ref.sharding), start, state["params"])
    state["params"] = params
    state["opt_state"] = {"gpt": setup.optimizers["gpt"].init(params["gpt"])}

    rng = np.random.default_rng(args.seed)

    def batch(split):  # nanoGPT's get_batch (high is exclusive: the last window ends on the split's last token)
        data = train if split == "train" else val
        starts = (torch.randint(len(data) - m.context, (cfg.data.batch_size,), generator=gen).numpy() if nanogpt
                  else rng.integers(0, len(data) - window, cfg.data.batch_size))
        return np.stack([data[i:i + window] for i in starts]).astype(np.int32)

    def nanogpt_eval_batches():  # estimate_loss draws its train batches, then its val batches
        return [batch(split) for split in ("train", "val") for _ in range(EVAL_ITERS)][EVAL_ITERS:]

    log, max_diff, t0 = [], 0.0, time.perf_counter()
    toks = batch("train")
    if nanogpt:
        nanogpt_eval_batches()
    for it in range(args.steps):
        for group in tstep.opt.param_groups:
            group["lr"] = nanogpt_lr(it, decay_iters=args.steps)
        torch_loss = float(tstep(toks).detach())
        state, metrics = setup.train_step(state, meshlib.to_global({"tokens": toks}, setup.batch_sharding))
        toks = batch("train")
        if nanogpt and (it + 1) % EVAL_INTERVAL == 0:
            val_batches = nanogpt_eval_batches()  # the last ones are iteration `steps`'s estimate
        jax_loss = float(metrics["loss"])
        max_diff = max(max_diff, abs(jax_loss - torch_loss))
        if it % 100 == 0 or it == args.steps - 1:
            log.append({"step": it, "torch": round(torch_loss, 6), "jax": round(jax_loss, 6)})
            print(log[-1], file=sys.stderr, flush=True)

    nll = jax.jit(lambda p, t: setup.model.eval_metrics(p, {}, {"tokens": t}, None)["loss"])  # per window

    def mean_losses(windows):  # both models' mean next-token NLL over equal-length windows
        tot_j = tot_t = 0.0
        with torch.no_grad():
            for b in range(0, len(windows), 96):
                toks = windows[b:b + 96]
                tot_j += float(nll(state["params"], jnp.asarray(toks)).sum())
                tt = torch.from_numpy(toks.astype(np.int64))
                tot_t += float(tstep.model(tt[:, :-1], tt[:, 1:])) * len(toks)
        return tot_j / len(windows), tot_t / len(windows)

    starts = np.arange((len(val) - window) // m.context + 1) * m.context
    val_jax, val_torch = mean_losses(np.stack([val[i:i + window] for i in starts]).astype(np.int32))
    out = {"experiment": "gpt-shakespeare-char-cpu", "stream": args.stream, "seed": args.seed,
           "torch_seed": 1337 + args.seed, "steps": args.steps, "max_abs_train_loss_diff": max_diff,
           "val_loss_jax": val_jax, "val_loss_torch": val_torch, "val_windows": int(len(starts))}
    if nanogpt and args.steps % EVAL_INTERVAL == 0:
        est_jax, est_torch = mean_losses(np.concatenate(val_batches))
        out.update({"nanogpt_estimate_jax": est_jax, "nanogpt_estimate_torch": est_torch})
    emit({**out, "wall_s": round(time.perf_counter() - t0, 1), "log": log}, args.out)


if __name__ == "__main__":
    main()
