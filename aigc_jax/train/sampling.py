"""Samples of a run's state: image grids, image-to-image panels and text, chosen from the model's declaration.

Used by the trainer's sample hook and by `aigc_jax.sample`; every function takes a `Setup` and a state (a
checkpoint's pytree) and draws with the model's sampling params (`aigc_jax.core.contract.sampling_params`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from aigc_jax.core.contract import ImageToImage, grid_conditions, sampling_params, validate_conditions
from aigc_jax.data import sources
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.writers import save_grid, save_panels, save_text


def draw(setup, state: dict, num: int, seed: int, conditions: dict | None = None) -> np.ndarray:
    """``num`` samples with ``conditions`` (default: the grid's, e.g. labels 0..9 repeating), drawn with
    ``jax.random.key(seed)`` and the model's sampling params; a numpy array (images or token ids).

    Array conditions are arguments of the jitted sampler, settings (``spec`` kind ``setting``) are static. The
    result is replicated, so every process can read it, also when the params span hosts."""
    from aigc_jax.core.config import check_seed

    check_seed(seed, "seed")
    model = setup.model
    conditions = grid_conditions(model.spec, num) if conditions is None else dict(conditions)
    static = {c.name for c in model.spec.conditions if c.static}
    settings = {k: v for k, v in conditions.items() if k in static}
    arrays = {k: v for k, v in conditions.items() if k not in static}
    params = sampling_params(model, state["params"], state["model_state"])
    validate_conditions(model, num, conditions)  # before tracing: concrete values are range-checked here
    fn = _sampler(setup, num, settings)
    return np.asarray(jax.device_get(fn(params, jax.random.key(seed), arrays)))


def _sampler(setup, num: int, settings: dict):
    """The jitted sampler for ``num`` samples with these settings, made once per setup: the trainer's sample hook
    draws the same samples every ``sample_every`` steps, and a fresh ``jax.jit`` each time would trace, lower and
    compile them again."""
    key = (num, tuple(sorted(settings.items())))
    if key not in setup.samplers:
        model = setup.model
        setup.samplers[key] = jax.jit(lambda p, k, c: model.sample(p, k, num, **c, **settings),
                                      out_shardings=meshlib.replicated(setup.mesh))
    return setup.samplers[key]


def panel_images(setup, state: dict, num: int, seed: int, split: str = "test") -> np.ndarray:
    """For an `ImageToImage` model: the K panels (e.g. input | output | target) of each of the first ``num``
    examples of a split, ``[num, K, H, W, C]`` in [0, 1]. Its samples need inputs, so its grids are made from data."""
    src = sources.for_experiment(setup.config, split, setup.model.spec)
    batch = src.__getitems__(np.arange(min(num, len(src))))

    def fn(params, model_state, b, key):
        data_key, model_key = jax.random.split(key)
        return setup.model.grid_images(params, model_state, setup.transform(b, data_key), model_key)

    out = jax.jit(fn, out_shardings=meshlib.replicated(setup.mesh))(state["params"], state["model_state"], batch,
                                                                     jax.random.key(seed))
    return np.asarray(jax.device_get(out))


def sample_grid(setup, state: dict, num: int, seed: int, path: Path, tokenizer=None):
    """Draw the trainer's samples for ``path`` (``samples/step_N.png``) and return a function that writes them:
    a text file of up to 4 continuations of the default prompt for a token model (``.txt``), input | output |
    target panels of test data for an `ImageToImage` model, else a grid of ``num`` images with the grid conditions.
    Every process draws (params may be sharded across hosts); the caller lets one write."""
    model = setup.model
    if model.spec.output == "tokens":
        from aigc_jax.data.text import default_prompt

        if tokenizer is None:
            return lambda: None
        toks = draw(setup, state, min(num, 4), seed, {"prompt": default_prompt(tokenizer)})
        return lambda: save_text("\n\n---\n\n".join(tokenizer.decode(t) for t in toks), path.with_suffix(".txt"))
    if isinstance(model, ImageToImage):
        panels = panel_images(setup, state, num, seed)
        return lambda: save_panels(panels, path)
    images = draw(setup, state, num, seed)
    return lambda: save_grid(images, path)
