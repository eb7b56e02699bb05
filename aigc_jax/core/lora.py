"""Low-rank adaptation (LoRA; Hu et al. 2021, arXiv:2106.09685) of any model's weights, applied by the trainer.

A weight ``W`` read as a matrix ``[*stack, fan_in, fan_out]`` (its leading stacked axes, e.g. a scanned "layers"
axis, then its input axes flattened, then its output axes flattened) gets two adapters beside it in its parameter
dict: ``NAME_lora_a`` ``[*stack, fan_in, r]`` drawn from N(0, 1/fan_in) and ``NAME_lora_b`` ``[*stack, r, fan_out]``
zero, so that training starts exactly at the base model (the paper's initialisation). The model always sees the
merged weight ``W + (alpha / r) A B`` reshaped to ``W``'s shape (`merge_adapters`): the same function as the
paper's ``x W + (alpha / r) (x A) B`` for a dense layer, and for a convolution, which is a matrix on its im2col
patches, with no change to any family's code. Only the adapters train: in a player that has adapters every other
parameter is frozen and carries no optimizer state (`aigc_jax.train.optim`). `aigc_jax.load` hands out merged
weights, so a LoRA run samples and evaluates like any run.

Which weights: those a `LowRankAdaptable` model declares (the GPT's attention and MLP projections), otherwise
every leaf named ``kernel`` with two or more axes (dense ``[in, out]``, convolution ``[kh, kw, in, out]``); of
those, the ones whose path (``PLAYER/keys``, as ``--freeze`` names them) fully matches the regular expression of
``train.lora = "RANK[:REGEX]"`` (``--lora``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import zlib

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from aigc_jax.core.contract import (
    Extras,
    ImageToImage,
    LatentVariable,
    Likelihood,
    LowRankAdaptable,
    Partitioned,
    SeparateSamplingWeights,
    StateUpdates,
    TokenLikelihood,
)
from aigc_jax.core.errors import UserError
from aigc_jax.core.paths import key_name, param_paths

SUFFIX_A = "_lora_a"
SUFFIX_B = "_lora_b"


def is_adapter(path: str) -> bool:
    """Whether a parameter path names a LoRA adapter."""
    return path.endswith(SUFFIX_A) or path.endswith(SUFFIX_B)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    rank: int
    pattern: str  # a regular expression over parameter paths ("" or ".*": every adaptable weight)
    alpha: float

    @property
    def scale(self) -> float:
        """``alpha / rank``: the adapters' product is multiplied by it (the paper's scaling)."""
        return self.alpha / self.rank


def parse_lora(spec: str, alpha: float) -> LoraSpec:
    """``"RANK"`` or ``"RANK:REGEX"`` -> `LoraSpec`; anything else is a `UserError`."""
    rank_text, _, pattern = spec.partition(":")
    try:
        rank = int(rank_text)
    except ValueError:
        rank = 0
    if rank < 1:
        raise UserError(f"train.lora={spec!r}: expected RANK or RANK:REGEX with RANK a positive integer "
                        "(e.g. 8 or 8:gpt/blocks/.*/w[qv])")
    try:
        re.compile(pattern)
    except re.error as e:
        raise UserError(f"train.lora={spec!r}: {pattern!r} is not a regular expression ({e})") from None
    if not (math.isfinite(alpha) and alpha > 0):
        raise UserError(f"train.lora_alpha={alpha}: expected a positive number (the scale is alpha / rank)")
    return LoraSpec(rank, pattern, float(alpha))


def adaptable_weights(model, params: dict) -> dict[str, tuple[int, int]]:
    """``{path: (stacked, fan_in)}``: what a `LowRankAdaptable` model declares, else every ``kernel`` leaf with
    two or more axes read as ``[fan_in..., fan_out]`` (the last axis is the output)."""
    if isinstance(model, LowRankAdaptable):
        return model.adaptable_weights()
    return {path: (0, leaf.ndim - 1) for path, leaf in param_paths(params).items()
            if path.rsplit("/", 1)[-1] == "kernel" and leaf.ndim >= 2}


def targets(model, params: dict, spec: LoraSpec) -> dict[str, tuple[int, int]]:
    """The adaptable weights whose path fully matches ``spec.pattern``; none is a `UserError`."""
    weights = adaptable_weights(model, params)
    regex = re.compile(spec.pattern or ".*")
    hit = {p: layout for p, layout in weights.items() if regex.fullmatch(p)}
    if not hit:
        shown = ", ".join(list(weights)[:4]) or "none"
        raise UserError(f"--lora {spec.rank}:{spec.pattern}: matches no adaptable weight of this model "
                        f"(adaptable weights look like {shown})")
    return hit


def _matrix_shape(shape: tuple[int, ...], stacked: int, fan_in: int) -> tuple[tuple[int, ...], int, int]:
    stack = tuple(shape[:stacked])
    return stack, math.prod(shape[stacked:stacked + fan_in]), math.prod(shape[stacked + fan_in:])


def add_adapters(params: dict, layout: dict[str, tuple[int, int]], rank: int, key: jax.Array) -> dict:
    """``params`` (``{player: pytree}``) with ``NAME_lora_a`` / ``NAME_lora_b`` beside every weight in ``layout``;
    each adapter's draw depends on the key and its path only."""
    found = []

    def visit(tree, prefix):
        if isinstance(tree, list | tuple):
            return type(tree)(visit(x, f"{prefix}/{i}") for i, x in enumerate(tree))
        if not isinstance(tree, dict):
            return tree
        out = {}
        for k, v in tree.items():
            path = f"{prefix}/{k}" if prefix else str(k)
            out[k] = visit(v, path)
            if path in layout and isinstance(k, str):
                stack, fan_in, fan_out = _matrix_shape(v.shape, *layout[path])
                draw = jax.random.fold_in(key, zlib.crc32(path.encode()))
                out[k + SUFFIX_A] = (jax.random.normal(draw, (*stack, fan_in, rank), jnp.float32)
                                     / math.sqrt(fan_in)).astype(v.dtype)
                out[k + SUFFIX_B] = jnp.zeros((*stack, rank, fan_out), v.dtype)
                found.append(path)
        return out

    new = visit(params, "")
    missing = sorted(set(layout) - set(found))
    if missing:  # a declared weight that is not a named entry of a dict (e.g. an element of a list)
        raise TypeError(f"LoRA: weights {missing[:3]} are not entries of a parameter dict")
    return new


def merge_adapters(params, scale: float):
    """The adapters folded in: ``W + scale * A B`` (reshaped to ``W``'s shape) for every adapted weight, and the
    adapters removed. Trees without adapters come back unchanged (merging twice is merging once)."""
    if isinstance(params, list | tuple):
        return type(params)(merge_adapters(x, scale) for x in params)
    if not isinstance(params, dict):
        return params
    out = {}
    for k, v in params.items():
        if isinstance(k, str) and is_adapter(k):
            continue
        v = merge_adapters(v, scale)
        if isinstance(k, str) and k + SUFFIX_A in params:
            a, b = params[k + SUFFIX_A], params[k + SUFFIX_B]
            v = v + (scale * jnp.matmul(a, b)).reshape(v.shape).astype(v.dtype)
        out[k] = v
    return out


# ----------------------------------------------------------------------------------------------------------------
# The model with adapters: the base model's class, every function merging the adapters before it runs.

# Model methods that take params, and the position of ``params`` among their arguments (after self).
_PARAMS_AT = {"loss": 1, "after_update": 1, "eval_metrics": 0, "_sample": 0, "log_prob": 0, "token_log_probs": 0,
              "encode": 0,
              "decode": 0, "grid_images": 0}
_SUBCLASSES: dict[type, type] = {}


def _merging(fn, at: int):
    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        args = list(args)
        if len(args) > at:
            args[at] = merge_adapters(args[at], self.lora.scale)
        elif "params" in kwargs:
            kwargs["params"] = merge_adapters(kwargs["params"], self.lora.scale)
        return fn(self, *args, **kwargs)

    return method


def _subclass(cls: type) -> type:
    if cls in _SUBCLASSES:
        return _SUBCLASSES[cls]
    ns: dict = {"__doc__": f"{cls.__name__} with LoRA adapters (`aigc_jax.core.lora`).", "__module__": __name__}
    capabilities = {"loss": object, "eval_metrics": object, "_sample": object, "log_prob": Likelihood,
                    "token_log_probs": TokenLikelihood,
                    "encode": LatentVariable, "decode": LatentVariable, "grid_images": ImageToImage,
                    "after_update": StateUpdates}
    for name, at in _PARAMS_AT.items():
        if issubclass(cls, capabilities[name]):
            ns[name] = _merging(getattr(cls, name), at)

    def init(self, key):
        params, state = cls.init(self, key)
        layout = targets(self, params, self.lora)
        return add_adapters(params, layout, self.lora.rank, jax.random.fold_in(key, 0x10A)), state

    def sampling_params(self, params, state):
        merged = merge_adapters(params, self.lora.scale)
        return cls.sampling_params(self, merged, state) if issubclass(cls, SeparateSamplingWeights) else merged

    ns.update(init=init, sampling_params=sampling_params)
    if issubclass(cls, Partitioned):
        def param_partition_specs(self):
            flat = _flat_specs(cls.param_partition_specs(self))
            shapes = jax.eval_shape(self.init, jax.random.key(0))[0]

            def spec(path, _):
                name = "/".join(key_name(k) for k in path)
                return P() if is_adapter(name) else flat[name]  # adapters are small: replicated

            return jax.tree_util.tree_map_with_path(spec, shapes)

        ns["param_partition_specs"] = param_partition_specs
    if issubclass(cls, Extras):
        def extras(self):
            out = {}
            for name, fn in cls.extras(self).items():
                out[name] = _merging_function(fn, self.lora.scale) if callable(fn) else fn
            return out

        ns["extras"] = extras
    bases = (cls,) if issubclass(cls, SeparateSamplingWeights) else (cls, SeparateSamplingWeights)
    sub = type(f"Lora{cls.__name__}", bases, ns)
    _SUBCLASSES[cls] = sub
    return sub


def _flat_specs(specs) -> dict[str, P]:
    leaves = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
    return {"/".join(key_name(k) for k in path): s for path, s in leaves}


def _merging_function(fn, scale: float):
    @functools.wraps(fn)
    def merged(params, *args, **kwargs):
        return fn(merge_adapters(params, scale), *args, **kwargs)

    return merged


def with_lora(model, spec: LoraSpec):
    """``model`` with adapters: the same config, players and declaration; ``init`` adds the adapters and every
    function merges them first. The target weights are checked now (none matching is a `UserError`)."""
    new = copy.copy(model)
    new.__class__ = _subclass(type(model))
    new.lora = spec
    targets(model, jax.eval_shape(model.init, jax.random.key(0))[0], spec)
    return new
