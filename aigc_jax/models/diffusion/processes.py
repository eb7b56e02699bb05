"""Noising processes: the path from data to noise, its time sampling, and the training target.

Every process here writes the noisy image at time ``t`` as

    x_t = a(t) * x0 + s(t) * eps,    eps ~ N(0, I),   x0 in [-1, 1],

and converts the network's prediction back to ``(x0_hat, eps_hat)``, which is all a sampler sees
(`aigc_jax.models.diffusion.samplers`). Times run from data to noise; a sampler walks a descending grid of them.

- `DDPM` (Ho et al. 2020): discrete steps ``t = 0..T-1`` (Ho's ``t = 1..T``), ``a = sqrt(alpha_bar_t)``,
  ``s = sqrt(1 - alpha_bar_t)`` with a linear beta schedule (1e-4 to 0.02 over T = 1000, scaled by 1000 / T and
  clipped at 0.999 for other T) or the cosine schedule of
  Nichol & Dhariwal 2021 (``alpha_bar(t) = cos^2(pi/2 (t/T + 0.008) / 1.008)``, betas clipped at 0.999); targets
  ``eps``, ``x0`` or ``v = a * eps - s * x0`` (Salimans & Ho 2022); t uniform.
- `Flow` (flow matching / rectified flow, Lipman et al. 2023, Liu et al. 2023): ``t`` in [0, 1],
  ``a = 1 - t``, ``s = t``, the velocity target ``dx_t/dt = eps - x0``, ``t`` from a logit-normal (Esser et al.
  2024: ``t = sigmoid(m + s n)``, n ~ N(0, 1)) or uniform.

A new process is one class with these methods.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np


def linear_betas(T: int, start: float = 1e-4, end: float = 0.02, max_beta: float = 0.999) -> np.ndarray:
    """DDPM's schedule: betas evenly spaced from ``start`` to ``end`` for 1000 steps, scaled to keep the same
    total noise for other T (``1000 / T`` times both ends, as improved DDPM does), clipped at ``max_beta`` as the
    cosine schedule is. The clip only acts for T <= 20, where the scaled end reaches 1: a beta of 1 leaves
    alpha_bar = 0 (x_T holds nothing of x0, and converting an eps prediction to x0 divides by a(t) = 0, whose
    derivative is NaN), and a beta above 1 is no process at all."""
    scale = 1000.0 / T
    return np.minimum(np.linspace(scale * start, scale * end, T, dtype=np.float64), max_beta)


def cosine_betas(T: int, offset: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. 17: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2(pi/2 (t/T + o) / (1 + o))``,
    ``beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), 0.999)``."""
    f = np.cos((np.arange(T + 1, dtype=np.float64) / T + offset) / (1 + offset) * math.pi / 2) ** 2
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


@dataclasses.dataclass(frozen=True)
class DDPM:
    """The discrete-time variance-preserving process of Ho et al. 2020 (module docstring)."""

    timesteps: int = 1000
    schedule: str = "linear"  # linear | cosine
    target: str = "eps"  # eps | x0 | v
    continuous = False

    @property
    def betas(self) -> np.ndarray:
        return (linear_betas if self.schedule == "linear" else cosine_betas)(self.timesteps)

    @property
    def alpha_bar(self) -> np.ndarray:
        """``prod_{j <= t} (1 - beta_j)`` for t = 0..T-1, float64."""
        return np.cumprod(1.0 - self.betas)

    def coefficients(self, t):
        """``(a(t), s(t))`` for integer steps ``t`` (any shape), float32."""
        ab = jnp.asarray(self.alpha_bar, jnp.float32)[t]
        return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)

    def model_time(self, t):
        """The network's time input: the step index itself, as a float."""
        return jnp.asarray(t).astype(jnp.float32)

    def sample_time(self, key, n: int):
        return jax.random.randint(key, (n,), 0, self.timesteps)

    def grid(self, steps: int) -> np.ndarray:
        """``steps`` descending steps from T-1 to 0, evenly spaced and rounded (DDIM's respacing); ``steps = T`` is
        the full chain."""
        if not 1 <= steps <= self.timesteps:
            raise ValueError(f"steps={steps}: expected 1..{self.timesteps}")
        return np.unique(np.round(np.linspace(self.timesteps - 1, 0, steps)).astype(np.int32))[::-1]

    def target_of(self, x0, eps, t):
        a, s = _bcast(self.coefficients(t), x0)
        return {"eps": eps, "x0": x0, "v": a * eps - s * x0}[self.target]

    def to_x0_eps(self, pred, x_t, t):
        a, s = _bcast(self.coefficients(t), x_t)
        if self.target == "eps":
            return (x_t - s * pred) / a, pred
        if self.target == "x0":
            return pred, (x_t - a * pred) / s
        return a * x_t - s * pred, s * x_t + a * pred  # v: a^2 + s^2 = 1


@dataclasses.dataclass(frozen=True)
class Flow:
    """The straight path of flow matching / rectified flow (module docstring); t = 0 is data, t = 1 noise."""

    time_sampling: str = "logit_normal"  # logit_normal | uniform
    logit_mean: float = 0.0
    logit_std: float = 1.0
    time_scale: float = 1000.0  # the network reads t * time_scale (the range of DDPM's step embedding)
    continuous = True

    def coefficients(self, t):
        t = jnp.asarray(t, jnp.float32)
        return 1.0 - t, t

    def model_time(self, t):
        return jnp.asarray(t, jnp.float32) * self.time_scale

    def sample_time(self, key, n: int):
        if self.time_sampling == "uniform":
            return jax.random.uniform(key, (n,))
        return jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(key, (n,)))

    def grid(self, steps: int) -> np.ndarray:
        """``steps`` current times of ``linspace(1, 0, steps + 1)`` (the last step lands at t = 0)."""
        if steps < 1:
            raise ValueError(f"steps={steps}: expected >= 1")
        return np.linspace(1.0, 0.0, steps + 1, dtype=np.float32)[:-1]

    def target_of(self, x0, eps, t):
        return eps - x0

    def to_x0_eps(self, pred, x_t, t):
        t = _bcast((jnp.asarray(t, jnp.float32),), x_t)[0]
        return x_t - t * pred, x_t + (1.0 - t) * pred

    def velocity(self, x0, eps, t):
        """``dx_t/dt = a'(t) x0 + s'(t) eps = eps - x0`` (the ODE that Euler and Heun integrate)."""
        return eps - x0


def _bcast(values, like):
    """Per-example coefficients ``[B]`` (or scalars) broadcast against images ``[B, H, W, C]``."""
    return tuple(jnp.reshape(v, jnp.shape(v) + (1,) * (like.ndim - jnp.ndim(v))) for v in values)


def forward_marginal(process, x0, t, eps):
    """``x_t = a(t) x0 + s(t) eps`` for images ``[B, H, W, C]`` and times ``[B]``."""
    a, s = _bcast(process.coefficients(t), x0)
    return a * x0 + s * eps
