"""The model contract: what a registered model declares and provides, as pure functions over plain pytrees.

A model is an instance of `GenerativeModel` (the base every family extends) and declares, in one typed place:

- what it is, in its `ModelSpec` (``model.spec``): what it outputs (images or tokens) and their shape, the
  conditions its sampler accepts (each with its name, dtype and valid range), its evaluation metrics, and facts the
  trainer relies on (``per_example_loss``);
- what it can do, by the capability classes it inherits (checked with ``isinstance``, never ``hasattr``):
  `Likelihood` (``log_prob`` per example in nats over ``spec.data_dims`` dimensions), `TokenLikelihood` (its
  next-token terms one by one), `LatentVariable`
  (``encode``/``decode``, an importance-weighted ``log_prob``), `ImageToImage` (input | output | target panels,
  user images to model inputs), `SeparateSamplingWeights` (a sampler that uses other weights than the trained ones:
  a GAN's moving average), `Partitioned` (logical parameter partition specs), `StateUpdates` (non-trainable state
  updated after each optimizer update), `LowRankAdaptable` (the weights LoRA adapts), `Extras` (further pure
  functions `aigc_jax.load` exposes).

``params`` is always ``{player_name: pytree}`` (a GAN has two players); ``state`` the non-trainable part (batch
statistics, spectral-norm vectors, moving averages), ``{}`` for most models; ``batch`` a dict of arrays after the
device transform (``image`` float32 NHWC in [0, 1], ``label`` int32, ``tokens`` int32). The registry checks the
declaration against the implementation (`check_model_class`, `check_model`) when a model registers and when it is
built; the trainer, CLI, API, data and metrics read the declaration.

Sampling is uniform: ``model.sample(params, key, num, **conditions)`` takes the params that `aigc_jax.load` returns
(`sampling_params`), validates the conditions against ``spec.conditions`` (`validate_conditions`: an unknown name, a
missing required condition, a wrong shape or an out-of-range value is a `UserError`) and calls the family's
``_sample`` with every declared condition filled in.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.core.errors import UserError

Params = dict[str, Any]
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


# ----------------------------------------------------------------------------------------------------------------
# The declaration.


@dataclasses.dataclass(frozen=True)
class Condition:
    """One keyword argument of a model's sampler.

    ``kind``:
    - ``"label"``: a class id, int32, ``0 <= label < num_classes``; an int or an array ``[num]``;
    - ``"image"``: float32 images ``[num, *shape]`` in [0, 1] (an image-to-image model's inputs);
    - ``"tokens"``: int32 token ids ``[P]`` or ``[num, P]`` in ``0..vocab_size-1`` (a prompt);
    - ``"setting"``: one Python number for the whole call (new tokens, temperature), static under ``jax.jit``,
      in ``[low, high]`` (``low_open`` excludes ``low``); or, with ``dtype="str"``, one of ``choices`` (a
      diffusion model's sampler name).
    ``default`` fills in a missing setting; ``required`` conditions have none.
    """

    name: str
    kind: Literal["label", "image", "tokens", "setting"]
    dtype: Literal["int32", "float32", "str"] = "int32"
    required: bool = False
    num_classes: int = 0  # label
    vocab_size: int = 0  # tokens
    shape: tuple[int, ...] = ()  # image: the per-example shape
    low: float | None = None  # setting
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()  # a str setting
    default: Any = None
    doc: str = ""

    @property
    def static(self) -> bool:
        """A setting is a Python value fixed at trace time; the others are arrays."""
        return self.kind == "setting"

    def describe(self) -> str:
        if self.kind == "label":
            return f"{self.name}: an int class in 0..{self.num_classes - 1} or an int array [num]"
        if self.kind == "image":
            return f"{self.name}: float images [num, {', '.join(map(str, self.shape))}] in [0, 1]"
        if self.kind == "tokens":
            return f"{self.name}: token ids in 0..{self.vocab_size - 1}, [P] or [num, P]"
        if self.dtype == "str":
            return f"{self.name}: one of {', '.join(self.choices)}"
        return f"{self.name}: {'an integer' if self.dtype == 'int32' else 'a number'} {self._range()}"

    def _range(self) -> str:
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if self.high is None else f"<= {self.high:g}"
        return " and ".join(p for p in (lo, hi) if p)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a model outputs and offers; see the module docstring.

    ``shape`` is one example's shape: ``(H, W, C)`` for images, ``(T,)`` for the token windows a sequence model
    reads (``T`` = its context; the data layer cuts windows of ``T + 1`` tokens for next-token prediction).
    ``data_dims`` is the number of dimensions a `Likelihood`'s ``log_prob`` sums over (pixels, or predicted
    tokens), so that bits per dimension are computed in one place (`bits_per_dim`). ``metrics`` are the evaluation
    metric groups the model offers (`aigc_jax.evaluate`), ``default_metrics`` those computed when none are asked for.
    """

    output: Literal["image", "tokens"]
    shape: tuple[int, ...]
    conditions: tuple[Condition, ...] = ()
    vocab_size: int = 0
    data_dims: int = 0
    metrics: tuple[str, ...] = ("loss",)
    default_metrics: tuple[str, ...] = ("loss",)
    # The loss is a mean of equal-sized per-example terms with no randomness, no cross-example statistics, no state
    # update and no metrics but means of such terms: a data-parallel step may differentiate it per device and
    # reduce once (`aigc_jax.train.step.per_device_value_and_grad`).
    per_example_loss: bool = False

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.shape if self.output == "image" else ()

    @property
    def context(self) -> int:
        return self.shape[0] if self.output == "tokens" else 0

    def condition(self, kind: str) -> Condition | None:
        """The first condition of ``kind`` (e.g. the class label), or None."""
        return next((c for c in self.conditions if c.kind == kind), None)

    @property
    def num_classes(self) -> int:
        label = self.condition("label")
        return label.num_classes if label is not None else 0


METRIC_GROUPS = {
    "loss": "the model's own per-example test metrics (e.g. -ELBO, token NLL, L1), averaged over the test split",
    "nll": "-log p(x) in nats from the declared likelihood (importance-weighted for latent-variable models), with "
           "bits per dimension",
    "fid": "Frechet distance of sample features to the test split's",
    "kid": "kernel inception distance",
    "is": "inception score of the samples",
    "pr": "precision and recall (Kynkaanniemi et al. 2019)",
    "label_accuracy": "the extractor's class agrees with the label asked for (conditional models)",
}
SAMPLE_METRIC_GROUPS = ("fid", "kid", "is", "pr", "label_accuracy")


def bits_per_dim(nll_nats: float, dims: int) -> float:
    """Nats per example over ``dims`` dimensions -> bits per dimension: ``nll / (dims * ln 2)``."""
    return nll_nats / (dims * math.log(2))


# ----------------------------------------------------------------------------------------------------------------
# The base and the capabilities.


class GenerativeModel(abc.ABC):
    """The base of every model: ``config``, ``players``, ``spec`` and the pure functions every model provides.

    Families implement ``init``, ``loss``, ``eval_metrics`` and ``_sample``; `sample` is final: it validates the
    conditions against ``spec.conditions`` and calls ``_sample(params, key, num, **conditions)`` with every declared
    condition present (labels and prompts as int32 arrays ``[num]`` / ``[num, P]``, settings as Python values).
    """

    config: Any
    players: tuple[str, ...]
    # Whether the step runs faster on a CPU split into one XLA device per core with the batch across them (the
    # `aigc-jax train` fast default, `aigc_jax.train.host`): a measured fact per family, not a contract; False
    # where one device, which threads its large matmuls and convolutions over the cores itself, was faster.
    cpu_data_parallel: bool = False

    @property
    @abc.abstractmethod
    def spec(self) -> ModelSpec:
        """The declaration (see `ModelSpec`)."""

    @abc.abstractmethod
    def init(self, key: jax.Array) -> tuple[Params, Any]:
        """Fresh ``(params, state)``."""

    @abc.abstractmethod
    def loss(self, player: str, params: Params, state: Any, batch: Batch, key: jax.Array
             ) -> tuple[jax.Array, tuple[Metrics, Any]]:
        """Scalar loss that ``player`` minimises (gradients are taken w.r.t. ``params[player]`` only), its metrics,
        and the updated non-trainable state."""

    @abc.abstractmethod
    def eval_metrics(self, params: Params, state: Any, batch: Batch, key: jax.Array) -> Metrics:
        """Per-example metrics, each an array ``[B]``; the trainer averages them over the test split."""

    @abc.abstractmethod
    def _sample(self, params: Params, key: jax.Array, num: int, **conditions) -> jax.Array:
        """The family's sampler, called by `sample` with validated conditions."""

    def sample(self, params: Params, key: jax.Array, num: int, **conditions) -> jax.Array:
        """``num`` samples: images float32 ``[num, H, W, C]`` in [0, 1], or token ids int32 ``[num, P + T]``.

        ``params`` are the sampling params (what `aigc_jax.load` returns, `sampling_params`); ``conditions`` are
        those of ``spec.conditions`` (validated; `UserError` for an unknown, missing or out-of-range one).
        """
        return self._sample(params, key, num, **validate_conditions(self, num, conditions))


class Likelihood(abc.ABC):
    """A model with a (log-)likelihood: ``log_prob`` per example in nats, summed over ``spec.data_dims``."""

    @abc.abstractmethod
    def log_prob(self, params: Params, batch: Batch, key: jax.Array | None = None) -> jax.Array:
        """``log p(x)`` per example ``[B]`` in nats (exact, or an estimate for `LatentVariable` models)."""


class TokenLikelihood(Likelihood):
    """An autoregressive token model whose ``log_prob`` is a sum of next-token terms, which it also gives one by
    one (an ensemble mixes the members' next-token distributions: `aigc_jax.metrics.likelihood`)."""

    @abc.abstractmethod
    def token_log_probs(self, params: Params, batch: Batch, key: jax.Array | None = None) -> jax.Array:
        """``log p(x_t | x_<t)`` per predicted token ``[B, T]`` in nats; ``log_prob`` is their sum over T."""


class LatentVariable(Likelihood):
    """A latent-variable model: ``encode``/``decode``, and ``log_prob`` an importance-weighted estimate with
    ``num_samples`` samples (default ``iwae_samples``; Burda et al. 2016)."""

    iwae_samples: int

    @abc.abstractmethod
    def encode(self, params: Params, x: jax.Array, label=None):
        """q(z | x) for images ``[B, H, W, C]``."""

    @abc.abstractmethod
    def decode(self, params: Params, z: jax.Array, label=None) -> jax.Array:
        """Images ``[B, H, W, C]`` in [0, 1] for latents ``[B, D]``."""

    @abc.abstractmethod
    def log_prob(self, params: Params, batch: Batch, key: jax.Array | None = None, num_samples: int | None = None
                 ) -> jax.Array:
        """The importance-weighted estimate of ``log p(x)`` per example ``[B]``."""


class ImageToImage(abc.ABC):
    """A model that translates input images (pix2pix): its sample grids show input | output | target of test data,
    and user images are turned into its inputs by ``input_from_images``."""

    @abc.abstractmethod
    def grid_images(self, params: Params, state: Any, batch: Batch, key: jax.Array) -> jax.Array:
        """Panels ``[B, K, H, W, C]`` in [0, 1], K per example (e.g. input | output | target)."""

    @abc.abstractmethod
    def input_from_images(self, images) -> jax.Array:
        """User images float ``[N, h, w, c]`` in [0, 1] -> the model's input condition ``[N, ...]``."""


class SeparateSamplingWeights(abc.ABC):
    """A sampler that uses other weights than the trained params (a GAN's moving-average generator and its
    normalisation statistics)."""

    @abc.abstractmethod
    def sampling_params(self, params: Params, state: Any) -> Params:
        """The params `GenerativeModel.sample` takes, from the trained params and the model state."""


class Partitioned(abc.ABC):
    """A model with a tensor-parallel layout: PartitionSpecs over mesh axes for every parameter."""

    @abc.abstractmethod
    def param_partition_specs(self) -> Params:
        """A pytree like ``params`` of `jax.sharding.PartitionSpec`."""


class StateUpdates(abc.ABC):
    """Non-trainable state updated after every applied optimizer update (e.g. a moving average of weights)."""

    @abc.abstractmethod
    def after_update(self, player: str, params: Params, state: Any) -> Any:
        """The new model state, given the updated params."""


class LowRankAdaptable(abc.ABC):
    """A model that declares which of its weights LoRA adapts and how each reads as a matrix (`aigc_jax.core.lora`;
    a model that does not declare it has its ``kernel`` leaves adapted)."""

    @abc.abstractmethod
    def adaptable_weights(self) -> dict[str, tuple[int, int]]:
        """``{path: (stacked, fan_in)}`` for each adaptable weight (paths as `aigc_jax.core.paths.param_path`
        names them): its number of leading stacked axes (a scanned "layers" axis), then of input axes; the
        remaining axes are its outputs."""


class CountsFlops(abc.ABC):
    """A token model that declares its training FLOPs per token (model FLOPs, for MFU: no recomputation)."""

    @abc.abstractmethod
    def flops_per_token(self) -> float:
        """Forward + backward FLOPs per trained token."""


class Extras(abc.ABC):
    """Further pure functions that `aigc_jax.load` exposes beside ``sample_fn`` (e.g. ``encode``, ``apply``)."""

    @abc.abstractmethod
    def extras(self) -> dict:
        """``{name: function}``."""


CAPABILITIES = (Likelihood, TokenLikelihood, LatentVariable, ImageToImage, SeparateSamplingWeights, Partitioned,
                StateUpdates, LowRankAdaptable, Extras)


def capabilities(model) -> tuple[str, ...]:
    """The names of the capabilities ``model`` (an instance or a class) declares."""
    cls = model if isinstance(model, type) else type(model)
    return tuple(c.__name__ for c in CAPABILITIES if issubclass(cls, c))


def sampling_params(model: GenerativeModel, params: Params, state: Any) -> Params:
    """The params that ``model.sample`` takes (and `aigc_jax.load` returns): the trained params, or those of a
    `SeparateSamplingWeights` model's sampler."""
    return model.sampling_params(params, state) if isinstance(model, SeparateSamplingWeights) else params


def grid_conditions(spec: ModelSpec, num: int) -> dict:
    """The conditions of a sample grid of ``num`` samples: labels ``0, 1, ..., K-1, 0, ...`` for a class-
    conditional model, nothing else (settings take their defaults)."""
    label = spec.condition("label")
    return {} if label is None else {label.name: jnp.arange(num, dtype=jnp.int32) % label.num_classes}


# ----------------------------------------------------------------------------------------------------------------
# Checks.


def _concrete(x) -> np.ndarray | None:
    """``x`` as a numpy array when its value is known now (not a tracer inside jit/vmap/grad)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def validate_conditions(model: GenerativeModel, num: int, conditions: dict) -> dict:
    """Conditions checked against ``model.spec`` and normalised: labels int32 ``[num]``, prompts int32 ``[num, P]``,
    images float32 ``[num, ...]``, settings Python numbers with defaults filled in. Values are range-checked when
    they are concrete (shapes always)."""
    spec = model.spec
    name = type(model).__name__
    if isinstance(num, bool) or not isinstance(num, int | np.integer) or num < 1:
        raise UserError(f"num={num!r}: expected a positive integer number of samples")
    declared = {c.name: c for c in spec.conditions}
    unknown = sorted(set(conditions) - set(declared))
    if unknown:
        accepted = "; ".join(c.describe() for c in spec.conditions) or "none (an unconditional model)"
        raise UserError(f"{name}.sample: unknown condition {', '.join(unknown)}; accepted: {accepted}")
    out = {}
    for c in spec.conditions:
        value = conditions.get(c.name)
        if value is None:
            if c.required:
                raise UserError(f"{name}.sample needs {c.describe()}")
            if c.static:
                out[c.name] = c.default
            else:
                out[c.name] = None
            continue
        out[c.name] = _check_condition(c, value, num, name)
    return out


def parse_settings(model: GenerativeModel, texts: dict[str, str]) -> dict:
    """Command-line ``NAME=VALUE`` texts of a model's settings as Python values of their declared dtypes (int,
    float or str); an undeclared name or an unparsable value is a `UserError` naming what is accepted. Ranges are
    checked later, by `validate_conditions`."""
    declared = {c.name: c for c in model.spec.conditions if c.static}
    out = {}
    for name, text in texts.items():
        c = declared.get(name)
        if c is None:
            accepted = "; ".join(c.describe() for c in declared.values()) or "none"
            raise UserError(f"{type(model).__name__} has no sampler setting {name!r}; its settings: {accepted}")
        try:
            out[name] = {"int32": int, "float32": float, "str": str}[c.dtype](text)
        except ValueError:
            raise UserError(f"setting {name}={text!r}: expected {c.describe().split(': ', 1)[1]}") from None
    return out


def validate_settings(model: GenerativeModel, settings: dict) -> dict:
    """Settings alone checked against ``model.spec`` (an undeclared name, a value of the wrong type or out of range
    is a `UserError`), with the declared defaults of the others filled in."""
    declared = {c.name: c for c in model.spec.conditions if c.static}
    name = type(model).__name__
    unknown = sorted(set(settings) - set(declared))
    if unknown:
        accepted = "; ".join(c.describe() for c in declared.values()) or "none"
        raise UserError(f"{name} has no sampler setting {', '.join(map(repr, unknown))}; its settings: {accepted}")
    return {k: _check_condition(c, settings[k], 1, name) if k in settings else c.default
            for k, c in declared.items()}


def _check_condition(c: Condition, value, num: int, model_name: str):
    where = f"{model_name}.sample condition {c.name}"
    if c.static and c.dtype == "str":
        if not isinstance(value, str) or value not in c.choices:
            raise UserError(f"{where}={value!r}: expected one of {', '.join(c.choices)}")
        return value
    if c.static:
        if isinstance(value, jax.core.Tracer) or (np.ndim(value) != 0):
            raise UserError(f"{where}={value!r}: expected one Python number (a setting, static under jit)")
        v = value.item() if hasattr(value, "item") else value
        if isinstance(v, bool) or not isinstance(v, int | float) or (c.dtype == "int32" and not float(v).is_integer()):
            raise UserError(f"{where}={value!r}: expected {c.describe().split(': ', 1)[1]}")
        if not math.isfinite(v) or (c.low is not None and (v < c.low or (c.low_open and v == c.low))) or (
                c.high is not None and v > c.high):
            raise UserError(f"{where}={value!r}: expected {c.describe().split(': ', 1)[1]}")
        return int(v) if c.dtype == "int32" else float(v)
    arr = jnp.asarray(value)
    if c.kind == "label":
        if not jnp.issubdtype(arr.dtype, jnp.integer) or arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != num):
            raise UserError(f"{where}: expected an int class or an int array [{num}], got {arr.dtype}{list(arr.shape)}")
        hi = c.num_classes - 1
        conc = _concrete(value)
        if conc is not None and conc.size and (conc.min() < 0 or conc.max() > hi):
            bad = conc.min() if conc.min() < 0 else conc.max()
            raise UserError(f"{where}={int(bad)}: expected a class in 0..{hi}")
        return jnp.broadcast_to(arr.astype(jnp.int32), (num,))
    if c.kind == "tokens":
        if not jnp.issubdtype(arr.dtype, jnp.integer) or arr.ndim not in (1, 2) or arr.shape[-1] < 1 or (
                arr.ndim == 2 and arr.shape[0] not in (1, num)):
            raise UserError(f"{where}: expected int token ids [P] or [{num}, P] with P >= 1, got "
                            f"{arr.dtype}{list(arr.shape)}")
        conc = _concrete(value)
        if conc is not None and (conc.min() < 0 or conc.max() >= c.vocab_size):
            raise UserError(f"{where}: token ids must be in 0..{c.vocab_size - 1}")
        return jnp.broadcast_to(arr.astype(jnp.int32).reshape(-1, arr.shape[-1]), (num, arr.shape[-1]))
    if c.kind == "image":
        expected = (num, *c.shape)
        if tuple(arr.shape) != expected or not jnp.issubdtype(arr.dtype, jnp.floating):
            raise UserError(f"{where}: expected float images of shape {list(expected)}, got "
                            f"{arr.dtype}{list(arr.shape)}")
        conc = _concrete(value)
        if conc is not None and conc.size and not (np.isfinite(conc).all() and conc.min() >= 0 and conc.max() <= 1):
            raise UserError(f"{where}: expected finite pixel values in [0, 1]")
        return arr.astype(jnp.float32)
    raise AssertionError(c.kind)


def check_model_class(cls: type) -> None:
    """Raise TypeError unless ``cls`` can be a registered model: a concrete `GenerativeModel` whose ``_sample``
    accepts ``(params, key, num, **conditions)``."""
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise TypeError(f"{cls!r} is not a subclass of aigc_jax.core.contract.GenerativeModel")
    if inspect.isabstract(cls):
        missing = sorted(cls.__abstractmethods__)
        raise TypeError(f"model class {cls.__name__} does not implement {', '.join(missing)} (declared by "
                        f"{', '.join(capabilities(cls)) or 'GenerativeModel'})")
    if "sample" in cls.__dict__:
        raise TypeError(f"model class {cls.__name__} overrides the final GenerativeModel.sample; implement _sample")


def check_model(model: GenerativeModel) -> None:
    """Raise TypeError unless a built model's declaration matches its implementation: players named, a
    `ModelSpec`, every condition a keyword of ``_sample``, a likelihood's dimension count, valid metric groups."""
    cls = type(model)
    check_model_class(cls)
    players = getattr(model, "players", None)
    if not players or not all(isinstance(p, str) for p in players):
        raise TypeError(f"{cls.__name__}.players must be a non-empty tuple of names")
    spec = model.spec
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"{cls.__name__}.spec must be a ModelSpec, got {type(spec).__name__}")
    params = inspect.signature(model._sample).parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for c in spec.conditions:
        if c.name not in params and not takes_kwargs:
            raise TypeError(f"{cls.__name__} declares condition {c.name!r} but its _sample has no such parameter")
        if c.kind == "label" and c.num_classes < 1:
            raise TypeError(f"{cls.__name__}: label condition {c.name!r} needs num_classes >= 1")
        if c.kind == "tokens" and c.vocab_size < 1:
            raise TypeError(f"{cls.__name__}: tokens condition {c.name!r} needs vocab_size >= 1")
        if c.kind == "setting" and c.required is False and c.default is None:
            raise TypeError(f"{cls.__name__}: setting {c.name!r} needs a default")
        if c.kind == "setting" and (c.dtype == "str") != bool(c.choices):
            raise TypeError(f"{cls.__name__}: setting {c.name!r}: a str setting, and only it, lists its choices")
    if len({c.name for c in spec.conditions}) != len(spec.conditions):
        raise TypeError(f"{cls.__name__} declares a condition twice")
    unknown = [m for m in (*spec.metrics, *spec.default_metrics) if m not in METRIC_GROUPS]
    if unknown or not set(spec.default_metrics) <= set(spec.metrics):
        raise TypeError(f"{cls.__name__}: metrics {unknown or spec.default_metrics} are not metric groups of the "
                        f"model (known groups: {', '.join(METRIC_GROUPS)})")
    if isinstance(model, Likelihood) and spec.data_dims < 1:
        raise TypeError(f"{cls.__name__} is a Likelihood but its spec declares data_dims={spec.data_dims}")
    if "nll" in spec.metrics and not isinstance(model, Likelihood):
        raise TypeError(f"{cls.__name__} offers the nll metric but is not a Likelihood")
    if any(m in SAMPLE_METRIC_GROUPS for m in spec.metrics) and spec.output != "image":
        raise TypeError(f"{cls.__name__} offers sample metrics but does not output images")
    if "label_accuracy" in spec.metrics and spec.condition("label") is None:
        raise TypeError(f"{cls.__name__} offers label_accuracy but declares no label condition")
    if spec.output == "tokens" and (spec.vocab_size < 1 or len(spec.shape) != 1):
        raise TypeError(f"{cls.__name__}: a token model declares vocab_size >= 1 and shape (context,)")
    if spec.output == "image" and len(spec.shape) != 3:
        raise TypeError(f"{cls.__name__}: an image model declares shape (H, W, C)")
