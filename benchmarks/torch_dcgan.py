"""PyTorch twin of the DCGAN in `experiments/dcgan_mnist.py` and its train step (eager mode).

Same networks as `aigc_jax.models.gan.networks` at the experiment's widths (same layer shapes and parameter
counts; torch's default initialisation and NCHW layout):

- generator: Linear(z -> 7*7*64) -> BatchNorm -> ReLU -> [3x3 conv to 4x channels -> pixel shuffle -> BatchNorm ->
  ReLU] -> 3x3 conv to 4 channels -> pixel shuffle -> tanh;
- discriminator: 4x4 stride-2 pad-1 convs 1 -> 32 -> 64, batch norm (batch statistics only, no running averages)
  on all but the first, LeakyReLU(0.2), flatten, Linear -> 1.

One step does what `aigc_jax.train.step` does for `dcgan-mnist`: a discriminator update (fresh noise, a no-grad
generator forward in training mode that leaves the generator's running statistics alone, D on the real and the fake
batch separately, non-saturating loss), then a generator update (fresh noise, -log D(G(z)), weight gradients of G
only), then the EMA of the generator's weights (decay ``min(0.999, (1 + t) / (10 + t))``) and the EMA generator's
running statistics, measured by running it in training mode on the generator update's noise. Adam(2e-4, (0.5,
0.999)) for both players, batch 64, images scaled to [-1, 1]. The JAX step's NaN guard (global grad norm +
conditional update) has no counterpart here.

PyTorch is the optional `bench` extra, never a core dependency.
"""

from __future__ import annotations

import copy
import time

import numpy as np


def make_twin(image_shape=(28, 28, 1), latent_dim=64, g_channels=(64, 32), d_channels=(32, 64),
              g_hidden=(1024,), d_hidden=(1024,), lr=2e-4,
              betas=(0.5, 0.999), ema_decay=0.999, threads: int | None = None, channels_last: bool = False):
    """Returns ``(step, torch, param_counts)``: ``step(images_uint8 [B, H, W, C]) -> d_loss tensor`` runs one
    train step; ``param_counts = {"generator": n, "discriminator": n}``."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    if threads:
        torch.set_num_threads(threads)
    h, w, c = image_shape
    s = 2 ** len(g_channels)
    base = (g_channels[0], h // s, w // s)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            sizes = [latent_dim, *g_hidden]
            self.hidden = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
            self.hidden_norms = nn.ModuleList([nn.BatchNorm1d(b, momentum=0.1, eps=1e-5) for b in g_hidden])
            self.inp = nn.Linear(sizes[-1], base[0] * base[1] * base[2])
            self.inp_norm = nn.BatchNorm2d(g_channels[0], momentum=0.1, eps=1e-5)
            outs = [*g_channels[1:], c]
            self.convs = nn.ModuleList([nn.Conv2d(a, 4 * b, 3, padding=1) for a, b in zip(g_channels, outs,
                                                                                          strict=True)])
            self.norms = nn.ModuleList([nn.BatchNorm2d(b, momentum=0.1, eps=1e-5) for b in outs[:-1]])

        def forward(self, z):
            for layer, norm in zip(self.hidden, self.hidden_norms, strict=True):
                z = F.relu(norm(layer(z)))
            x = self.inp(z).view(z.shape[0], *base)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = F.relu(self.inp_norm(x))
            for i, conv in enumerate(self.convs):
                x = F.pixel_shuffle(conv(x), 2)
                if i < len(self.norms):
                    x = F.relu(self.norms[i](x))
            return torch.tanh(x)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            chans = [c, *d_channels]
            self.convs = nn.ModuleList([nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in zip(chans[:-1],
                                                                                                chans[1:],
                                                                                                strict=True)])
            # The JAX discriminator always normalises with the statistics of the batch it sees.
            self.norms = nn.ModuleList([nn.Identity()] + [nn.BatchNorm2d(b, eps=1e-5, track_running_stats=False)
                                                          for b in d_channels[1:]])
            sizes = [(h >> len(d_channels)) * (w >> len(d_channels)) * d_channels[-1], *d_hidden]
            self.hidden = nn.ModuleList([nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)])
            self.hidden_norms = nn.ModuleList([nn.BatchNorm1d(b, eps=1e-5, track_running_stats=False)
                                               for b in d_hidden])
            self.out = nn.Linear(sizes[-1], 1)

        def forward(self, x):
            for conv, norm in zip(self.convs, self.norms, strict=True):
                x = F.leaky_relu(norm(conv(x)), 0.2)
            x = x.flatten(1)
            for layer, norm in zip(self.hidden, self.hidden_norms, strict=True):
                x = F.leaky_relu(norm(layer(x)), 0.2)
            return self.out(x)[:, 0]

    G, D = Generator(), Discriminator()
    G_ema = copy.deepcopy(G)  # weights and running statistics of the averaged generator
    if channels_last:
        G, D, G_ema = (m.to(memory_format=torch.channels_last) for m in (G, D, G_ema))
    for p in G_ema.parameters():
        p.requires_grad_(False)
    G.train(), D.train(), G_ema.train()
    g_params, d_params, ema_params = list(G.parameters()), list(D.parameters()), list(G_ema.parameters())
    g_norms = [m for m in G.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    opt_d = torch.optim.Adam(d_params, lr=lr, betas=betas, eps=1e-8)
    opt_g = torch.optim.Adam(g_params, lr=lr, betas=betas, eps=1e-8)
    counter = {"t": 0}

    def step(x_uint8: np.ndarray):
        b = len(x_uint8)
        real = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)
        if channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        # Discriminator update. G runs in training mode (batch statistics) but, as in the JAX loss, its running
        # statistics are not updated by this forward: momentum 0 keeps them.
        for m in g_norms:
            m.momentum = 0.0
        with torch.no_grad():
            fake = G(torch.randn(b, latent_dim))
        for m in g_norms:
            m.momentum = 0.1
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        # Generator update: gradients of G's weights only (D's weight gradients are not needed).
        z = torch.randn(b, latent_dim)
        g_loss = F.softplus(-D(G(z))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward(inputs=g_params)
        opt_g.step()
        with torch.no_grad():
            G_ema(z)  # the averaged generator's running statistics, from the same noise (before its update)
            counter["t"] += 1
            t = counter["t"]
            decay = min(ema_decay, (1.0 + t) / (10.0 + t))
            torch._foreach_lerp_(ema_params, g_params, 1.0 - decay)  # ema <- decay * ema + (1 - decay) * p
        return d_loss

    counts = {"generator": sum(p.numel() for p in g_params), "discriminator": sum(p.numel() for p in d_params)}
    return step, torch, counts


def steps_per_sec(steps: int = 200, warmup: int = 20, batch: int = 64, threads: int | None = None,
                  channels_last: bool = False, images: np.ndarray | None = None) -> float:
    """Steps/s of the twin over ``steps`` steps after ``warmup`` steps, on batches of ``images`` (uint8
    ``[N, 28, 28, 1]``; random pixels if None) taken in a fixed random order."""
    step, _, _ = make_twin(threads=threads, channels_last=channels_last)
    if images is None:
        images = np.random.default_rng(0).integers(0, 256, (60 * batch, 28, 28, 1), dtype=np.uint8)
    perm = np.random.default_rng(0).permutation(len(images))
    nb = len(images) // batch

    def run(n, start):
        for i in range(start, start + n):
            j = i % nb
            loss = step(images[perm[j * batch:(j + 1) * batch]])
        float(loss.detach())

    run(warmup, 0)
    t = time.perf_counter()
    run(steps, warmup)
    return steps / (time.perf_counter() - t)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    print(f"{steps_per_sec(a.steps, threads=a.threads or None, channels_last=a.channels_last):.2f} steps/s")
