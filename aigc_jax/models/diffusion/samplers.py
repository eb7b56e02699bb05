"""Samplers that see only the denoiser: ``denoise(x, t) -> (x0_hat, eps_hat)`` on a process's time grid.

Each is one function ``(process, denoise, x_T, times, key, **options) -> x_0``. ``times`` is the process's
descending grid (`DDPM.grid`, `Flow.grid`); after the last grid time the sampler lands on the data end
(``a = 1, s = 0``), where the sample is ``x0_hat``.

- `ddim` (Song et al. 2021, eq. 12) with ``eta``: ``x' = a' x0_hat + sqrt(s'^2 - sigma^2) eps_hat + sigma z``,
  ``sigma = eta s' sqrt(1 - (a s' / (a' s))^2)``. ``eta = 0`` is deterministic (and, on the flow path, exactly
  Euler's method); ``eta = 1`` is DDPM's ancestral sampler (`ddpm`; with every step of the chain, Ho et al.'s
  algorithm 2 with the posterior variance beta-tilde).
- `euler`, `heun`: the ODE ``dx/dt = v(x, t)`` of a continuous-time process (the flow's velocity), first and
  second order (Heun's corrector on every step but the last, which lands on t = 0: 2N - 1 evaluations, as in
  Karras et al. 2022, algorithm 1).

`guided` wraps a label-conditional prediction for classifier-free guidance (Ho & Salimans 2022):
``pred = uncond + w (cond - uncond)``, w = 0 the unconditional model, w = 1 the conditional one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _next_coefficients(process, times):
    """``(a, s)`` at each grid time's successor: the next grid time, and ``(1, 0)`` after the last."""
    a, s = process.coefficients(jnp.asarray(times))
    a_next = jnp.concatenate([a[1:], jnp.ones((1,), jnp.float32)])
    s_next = jnp.concatenate([s[1:], jnp.zeros((1,), jnp.float32)])
    return a, s, a_next, s_next


def ddim_coefficients(a, s, a_next, s_next, eta: float):
    """DDIM's noise scale and direction weight from ``(a, s)`` to ``(a', s')``:
    ``sigma = eta s' sqrt(1 - (a s' / (a' s))^2)``, ``direction = sqrt(s'^2 - sigma^2)``."""
    ratio = a * s_next / (a_next * jnp.maximum(s, 1e-12))
    sigma = eta * s_next * jnp.sqrt(jnp.clip(1.0 - ratio ** 2, 0.0, None))
    return sigma, jnp.sqrt(jnp.clip(s_next ** 2 - sigma ** 2, 0.0, None))


def ddim_inversion(process, denoise, x0, times):
    """Deterministic DDIM run backwards, data to noise, on the reversed grid ``times`` (ascending after the data
    end): ``x_{t'} = a' x0_hat(x_t, t) + s' eps_hat(x_t, t)`` for the next-noisier t' (Song et al. 2021, sec. 4.3,
    the ODE's encoder). With the DDIM sampler on the same grid it is an exact inverse where the denoiser does not
    change between neighbouring times, and a first-order one otherwise."""
    ts = jnp.asarray(times)[::-1]  # ascending
    a, s = process.coefficients(ts)

    def step(x, inputs):
        t_prev, a_n, s_n = inputs
        x0_hat, eps = denoise(x, jnp.full((x.shape[0],), t_prev))
        return a_n * x0_hat + s_n * eps, None

    # The first step starts from the data end (a = 1, s = 0), where the denoiser is read at the lowest grid time.
    prev = jnp.concatenate([ts[:1], ts[:-1]])
    x, _ = jax.lax.scan(step, x0, (prev, a, s))
    return x


def ddim(process, denoise, x, times, key, eta: float = 0.0):
    """DDIM with stochasticity ``eta`` (module docstring); ``eta = 1`` is ancestral DDPM sampling."""
    a, s, a_next, s_next = _next_coefficients(process, times)
    ts = jnp.asarray(times)

    def step(x, inputs):
        t, a_t, s_t, a_n, s_n, k = inputs
        x0, eps = denoise(x, jnp.full((x.shape[0],), t))
        sigma, direction = ddim_coefficients(a_t, s_t, a_n, s_n, eta)
        x = a_n * x0 + direction * eps
        if eta > 0:
            x = x + sigma * jax.random.normal(k, x.shape, x.dtype)
        return x, None

    keys = jax.random.split(key, len(times))
    x, _ = jax.lax.scan(step, x, (ts, a, s, a_next, s_next, keys))
    return x


def ddpm(process, denoise, x, times, key, eta: float = 1.0):
    """Ancestral sampling: DDIM with ``eta = 1`` (the ``eta`` argument is ignored)."""
    del eta
    return ddim(process, denoise, x, times, key, eta=1.0)


def _velocity(process, denoise, x, t):
    x0, eps = denoise(x, jnp.full((x.shape[0],), t))
    return process.velocity(x0, eps, t)


def euler(process, denoise, x, times, key, eta: float = 0.0):
    """Euler's method on ``dx/dt = v``: ``x' = x + (t' - t) v(x, t)``."""
    del key, eta
    ts = jnp.asarray(times, jnp.float32)
    nexts = jnp.concatenate([ts[1:], jnp.zeros((1,), jnp.float32)])

    def step(x, inputs):
        t, t_next = inputs
        return x + (t_next - t) * _velocity(process, denoise, x, t), None

    x, _ = jax.lax.scan(step, x, (ts, nexts))
    return x


def heun(process, denoise, x, times, key, eta: float = 0.0):
    """Heun's method (the trapezoidal corrector of an Euler predictor) on ``dx/dt = v``; the step onto t = 0 is
    Euler's."""
    del key, eta
    ts = jnp.asarray(times, jnp.float32)
    nexts = jnp.concatenate([ts[1:], jnp.zeros((1,), jnp.float32)])

    def step(x, inputs):
        t, t_next = inputs
        h = t_next - t
        v = _velocity(process, denoise, x, t)
        x_euler = x + h * v

        def corrected(_):
            return x + 0.5 * h * (v + _velocity(process, denoise, x_euler, t_next))

        return jax.lax.cond(t_next > 0, corrected, lambda _: x_euler, None), None

    x, _ = jax.lax.scan(step, x, (ts, nexts))
    return x


SAMPLERS = {"ddim": ddim, "ddpm": ddpm, "euler": euler, "heun": heun}
CONTINUOUS_ONLY = ("euler", "heun")


def sampler_names(process) -> tuple[str, ...]:
    """The samplers a process accepts: DDIM/DDPM for any, Euler/Heun for a continuous-time one."""
    return tuple(n for n in SAMPLERS if process.continuous or n not in CONTINUOUS_ONLY)


def function_evaluations(sampler: str, steps: int) -> int:
    """Network evaluations of ``steps`` sampler steps (before guidance, which doubles them unless w = 1)."""
    return 2 * steps - 1 if sampler == "heun" else steps


def guided(predict, label, null_label: int, weight: float):
    """Classifier-free guidance of ``predict(x, t, label) -> prediction``: ``uncond + w (cond - uncond)`` with the
    unconditional prediction at the null label, both in one batched call; ``w = 1`` is ``predict`` itself."""
    if weight == 1.0:
        return lambda x, t: predict(x, t, label)

    def combined(x, t):
        b = x.shape[0]
        both = predict(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                       jnp.concatenate([label, jnp.full_like(label, null_label)]))
        cond, uncond = both[:b], both[b:]
        return uncond + weight * (cond - uncond)

    return combined
