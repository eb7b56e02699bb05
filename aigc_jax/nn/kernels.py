"""A trace-time switch for the hand-written reverse-mode kernels (`nn.linear.dense`, `nn.attention.causal_attention`).

Those kernels carry a ``jax.custom_vjp`` for training speed on XLA:CPU, and a custom VJP cannot be differentiated in
forward mode (``jax.jvp``, ``jax.jacfwd``, hessians). So the custom rules are opt-in: outside
``with reverse_mode_kernels():`` each kernel is the same forward computation (the same operations in the same order,
so the same values) written in plain differentiable ``jax.numpy``, which every JAX transformation supports; inside
it, the kernels use their hand-written VJPs. The train step turns the switch on around its ``jax.value_and_grad``
(`aigc_jax.train.step.build_train_step`); evaluation, sampling and user code see the plain versions.

The switch is read while a function is traced, and it is part of ``jax.jit``'s cache key (a
``jax.make_user_context``), so a jitted function traced with the switch in one state is retraced, never reused, when
called in the other. It is thread-local. To get the fast kernels inside a jitted function, enter the switch inside
that function (around the ``value_and_grad``), as the train step does.

Example::

    with reverse_mode_kernels():
        loss, grads = jax.value_and_grad(loss_fn)(params)  # hand-written VJPs: reverse mode only
    jax.jvp(loss_fn, (params,), (tangent,))  # plain kernels: any transformation
"""

from __future__ import annotations

import jax

# Module-level on purpose: JAX asks that user contexts be created once, not concurrently with other JAX calls.
_reverse_mode = jax.make_user_context(default_value=False)


def reverse_mode_kernels(enabled: bool = True):
    """A context manager: inside it (``enabled=True``) the kernels of `aigc_jax.nn` trace with their hand-written
    VJPs, supporting reverse mode only; ``enabled=False`` restores the plain versions inside an enabled region."""
    return _reverse_mode(bool(enabled))


def reverse_mode_kernels_enabled() -> bool:
    """Whether the kernels being traced now use their hand-written VJPs (see `reverse_mode_kernels`)."""
    return bool(_reverse_mode.value)
