"""Feature extractors for the sample-quality metrics, pluggable by name.

An extractor turns images (float ``[N, H, W, C]`` in [0, 1], numpy or jax) into
``{"features": [N, D], "logits": [N, K]}`` numpy float arrays: ``features`` feed FID, KID and precision/recall,
``softmax(logits)`` feeds the Inception Score. Every extractor has an ``id`` that names the network, its weights
version and hash and its resize policy; a metric is comparable with another only when the ids match, so the id is
written beside every number (``eval.json``, reference-statistics files).

Registered names:
- ``lenet-mnist``: a small MNIST classifier trained by this project (weights shipped in the package).
- ``inception-v3``: the FID Inception network of pytorch-fid, ported to Flax NNX; its weights file
  (``pt_inception-2015-12-05-6726825d.pth``) is given by the user, never downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from aigc_jax.core.errors import UserError


class FeatureExtractor(Protocol):
    id: str  # network, weights version/hash and resize policy, e.g. "lenet-mnist/v1/sha256:ab12..../resize:none"
    image_shape: tuple[int, int, int]  # the (H, W, C) the network accepts before its own resize, if fixed

    def __call__(self, images: np.ndarray, batch_size: int = 500) -> dict[str, np.ndarray]:
        """``{"features": [N, D], "logits": [N, K]}`` for images ``[N, H, W, C]`` in [0, 1]."""
        ...


def _lenet(**options) -> FeatureExtractor:
    from aigc_jax.metrics.lenet import LeNetExtractor

    return LeNetExtractor(**options)


def _inception(**options) -> FeatureExtractor:
    from aigc_jax.metrics.inception import InceptionExtractor

    return InceptionExtractor(**options)


_EXTRACTORS: dict[str, Callable[..., FeatureExtractor]] = {"lenet-mnist": _lenet, "inception-v3": _inception}


def extractor_names() -> tuple[str, ...]:
    return tuple(_EXTRACTORS)


def get_extractor(name: str, **options) -> FeatureExtractor:
    """The extractor registered as ``name``; ``options`` go to its constructor (e.g. ``weights=PATH``)."""
    if name not in _EXTRACTORS:
        raise UserError(f"unknown feature extractor {name!r}: expected one of {', '.join(_EXTRACTORS)}")
    return _EXTRACTORS[name](**options)
