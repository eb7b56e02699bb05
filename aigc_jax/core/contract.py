"""The model contract: what every registered model provides, as pure functions over plain pytrees.

``params`` is always a dict ``{player_name: pytree}``; a one-player model (a VAE) has one entry, a GAN two.
``state`` holds non-trainable model state (e.g. spectral-norm vectors, an EMA of weights); it is ``{}`` for most
models. ``batch`` is a dict of arrays after the device transform (``image`` float32 NHWC in [0, 1], ``label``
int32). The trainer builds its jitted step from these functions and never imports a model family.

Optional hooks: ``after_update`` (see `aigc_jax.train.step`), ``sampling_params`` (below), and for image-to-image
models ``grid_images(params, state, batch, key) -> [B, K, H, W, C]``, K panels per example (e.g. input | output |
target), which the trainer's sample grids and ``aigc-jax sample --split`` use on test data instead of `sample`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

Params = dict[str, Any]
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@runtime_checkable
class GenerativeModel(Protocol):
    """Protocol that the registry checks every model against."""

    config: Any
    players: tuple[str, ...]

    def init(self, key: jax.Array) -> tuple[Params, Any]:
        """Fresh ``(params, state)``."""
        ...

    def loss(
        self, player: str, params: Params, state: Any, batch: Batch, key: jax.Array
    ) -> tuple[jax.Array, tuple[Metrics, Any]]:
        """Scalar loss that ``player`` minimises (gradients are taken w.r.t. ``params[player]`` only), its metrics,
        and the updated non-trainable state."""
        ...

    def eval_metrics(self, params: Params, state: Any, batch: Batch, key: jax.Array) -> Metrics:
        """Per-example metrics, each an array ``[B]``; the trainer averages them over the test split."""
        ...

    def sample(self, params: Params, key: jax.Array, num: int, **cond) -> jax.Array:
        """``num`` samples; images are float32 ``[num, H, W, C]`` in [0, 1]."""
        ...

    def sample_conditions(self, num: int) -> dict[str, jax.Array]:
        """The conditioning used for a sample grid of ``num`` images (``{}`` when unconditional)."""
        ...


def sampling_params(model, params: Params, state: Any) -> Params:
    """The params that ``model.sample`` takes: by default the trained params; a model whose sampler uses other
    weights (a GAN's moving average of its generator, with its normalisation statistics) defines
    ``sampling_params(params, state)``."""
    fn = getattr(model, "sampling_params", None)
    return params if fn is None else fn(params, state)


REQUIRED = ("init", "loss", "eval_metrics", "sample", "sample_conditions")
