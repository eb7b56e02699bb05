"""PyTorch twin of the MLP VAE in `experiments/vae_mnist.py` (same shapes, batch, optimizer, data treatment).

Used only by `benchmarks/train_throughput.py`; PyTorch is the optional `bench` extra, never a core dependency.
"""

from __future__ import annotations

import math

import numpy as np


def make_twin(hidden=(500, 500), latent=50, lr=1e-3, total_steps=23400, threads: int | None = None):
    import torch
    from torch import nn

    if threads:
        torch.set_num_threads(threads)

    class TwinVAE(nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [784, *hidden]
            enc = []
            for a, b in zip(sizes[:-1], sizes[1:], strict=True):
                enc += [nn.Linear(a, b), nn.ReLU()]
            self.enc = nn.Sequential(*enc, nn.Linear(sizes[-1], 2 * latent))
            dsizes = [latent, *reversed(hidden)]
            dec = []
            for a, b in zip(dsizes[:-1], dsizes[1:], strict=True):
                dec += [nn.Linear(a, b), nn.ReLU()]
            self.dec = nn.Sequential(*dec, nn.Linear(dsizes[-1], 784))

        def forward(self, x):
            mean, logvar = self.enc(x).chunk(2, dim=-1)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            logits = self.dec(z)
            rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
            kl = 0.5 * (logvar.exp() + mean**2 - 1 - logvar).sum(-1)
            return (rec + kl).mean()

    model = TwinVAE()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps)
                                                                                 / total_steps)))

    def step(x_uint8: np.ndarray) -> float:
        x = torch.from_numpy(x_uint8.reshape(len(x_uint8), -1)).float().div_(255.0)
        x = torch.bernoulli(x)
        loss = model(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    return step, torch


def main() -> None:
    """``python benchmarks/torch_vae.py --steps N``: the twin alone in this process (MNIST train in one fixed random
    order, batch 128), after 50 warm-up steps; prints ``{"steps_per_sec": ..., "torch": ..., "threads": ...}``.
    `benchmarks/train_throughput.py` runs it so, in a process of its own, so that neither runtime's idle threads
    (XLA's pool, OpenMP's spinning workers) share the cores with the other's timed steps."""
    import argparse
    import json
    import os
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from aigc_jax.data import sources

    ap = argparse.ArgumentParser(description=main.__doc__.split(";")[0])
    ap.add_argument("--steps", type=int, default=1000)
    args = ap.parse_args()
    step, torch = make_twin(threads=os.cpu_count())
    images = sources.load_mnist("train").images
    perm = np.random.default_rng(0).permutation(len(images))
    batches = len(images) // 128

    def run(start: int, n: int) -> None:
        loss = None
        for i in range(start, start + n):
            j = i % batches
            loss = step(images[perm[j * 128:(j + 1) * 128]])
        if loss is not None:
            float(loss.detach())  # wait for the last step

    run(0, 50)
    t = time.perf_counter()
    run(50, args.steps)
    print(json.dumps({"steps_per_sec": args.steps / (time.perf_counter() - t), "torch": torch.__version__,
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
