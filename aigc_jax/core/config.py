"""Typed, frozen experiment configs and `--set key=value` overrides.

Every config is a tree of frozen dataclasses. Defaults live in the schema; an experiment file returns an instance
from `get_config()`. Overrides are parsed to the annotated type of the field they target, and any unknown key or
value that does not parse is a `UserError` naming what is accepted.

A tuple of dataclasses that each have a `name` field (the players of a model) is addressed by name:
`players.vae.optim.lr=3e-4`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal

import numpy as np

from aigc_jax.core.errors import UserError

# ----------------------------------------------------------------------------------------------------------------
# The schema shared by every family.


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """One player's Optax optimizer and learning-rate schedule."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = 0
    final_lr: float = 0.0  # learning rate at the last update of the cosine or linear decay
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0  # adamw only
    clip_norm: float = 0.0  # global-norm clipping; 0 disables it
    accumulate_steps: int = 1  # gradient accumulation: apply the mean gradient of every k micro-steps
    # Parameters whose path ("PLAYER/" + keys joined by "/", e.g. "gpt/blocks/0/attn/.*") fully matches this
    # regular expression are frozen: no update and no optimizer state (optax.multi_transform + set_to_zero).
    freeze: str = ""


@dataclasses.dataclass(frozen=True)
class PlayerConfig:
    """A trainable player: its optimizer and how many updates it makes per train step (the update schedule)."""

    name: str = "model"
    optim: OptimConfig = OptimConfig()
    updates_per_step: int = 1
    # The trainer's exponential moving average of this player's params (0: none), evaluated beside the raw
    # params; decay min(ema_decay, (1 + t) / (10 + t)) after the t-th update when ema_warmup, else ema_decay.
    ema_decay: float = 0.0
    ema_warmup: bool = True


@dataclasses.dataclass(frozen=True)
class DataConfig:
    name: str = "mnist"  # mnist | cifar10-subset | tfds:NAME | path/to/file.npz | shakespeare | file.txt | synthetic
    path: str = ""  # for mnist: a folder of IDX files (default: the embedded copy); for tfds: the data_dir
    batch_size: int = 128  # global batch, sharded over the mesh's data axes
    eval_batch_size: int = 500
    binarize: Literal["none", "dynamic"] = "none"  # dynamic: x ~ Bernoulli(pixel intensity), resampled every time
    tokenizer: Literal["char", "byte"] = "char"  # text datasets only
    train_fraction: float = 0.9  # text datasets only: the first fraction of the tokens trains, the rest is test
    seed: int = 0  # shuffling seed
    # Grain read threads: 0 reads each batch in the training thread (best for in-memory arrays, where a gather
    # costs microseconds); raise it for sources that decode records (tfds:NAME).
    read_threads: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000
    seed: int = 0
    log_every: int = 100
    eval_every: int = 0  # 0: only at the end
    sample_every: int = 0  # 0: only at the end
    checkpoint_every: int = 1000
    # Also checkpoint when this many seconds of wall time have passed since the last one (0: off): bounds the work
    # a `kill -9` or a machine failure can lose, whatever the step time.
    checkpoint_every_secs: float = 0.0
    keep_checkpoints: int = 3  # the last K; the best (lowest eval loss) is kept as well
    num_eval_batches: int = 0  # 0: the whole test split
    num_samples: int = 64  # images in each sample grid
    # "RUN_DIR" or "RUN_DIR@STEP": start from that run's params and model state, matched by path (new paths
    # stay freshly initialised; `aigc_jax.train.init_from`); the optimizer starts fresh. Unused on resume.
    init_from: str = ""
    # "RANK" or "RANK:REGEX": LoRA adapters of that rank on the adaptable weights whose path matches REGEX (default
    # all); only the adapters train, scaled by lora_alpha / RANK (`aigc_jax.core.lora`).
    lora: str = ""
    lora_alpha: float = 8.0
    # The weights that sample grids, `aigc-jax sample` and `aigc_jax.load` use: the trained ("raw") ones or the
    # trainer's moving averages ("ema", for the players that keep one: players.NAME.ema_decay > 0).
    sample_weights: Literal["raw", "ema"] = "raw"
    # K > 1: train K members in one compiled program, member i with seed train.seed + i on the same batches;
    # "vmap" batches them, "loop" runs them one after the other in the program (`aigc_jax.train.step`).
    population: int = 1
    population_mode: Literal["vmap", "loop"] = "vmap"
    # One hyperparameter varied across members: member i's learning rates (every player's, schedule included)
    # times factor i, e.g. 1,0.5,0.25,0.125 (empty: all 1). Applied as a final optax.scale whose factor
    # optax.inject_hyperparams keeps in each member's optimizer state.
    population_lr_scale: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of every family's model config; subclasses are frozen dataclasses too.

    ``STORED_DEFAULTS`` (a class attribute, not a field) names fields whose value for a config.json written before
    the field existed differs from today's default: such a run was trained with the old behaviour.
    """

    STORED_DEFAULTS: typing.ClassVar[dict[str, Any]] = {}

    @property
    def declared_compute_dtype(self) -> str | None:
        """The value of the family's ``compute_dtype`` field ("float32", "bfloat16"), or None for a family
        without one (it computes in float32)."""
        fields = {f.name for f in dataclasses.fields(self)}
        return self.compute_dtype if "compute_dtype" in fields else None

    @property
    def bf16_by_default(self) -> bool:
        """Whether `aigc_jax.train.host`'s fast defaults may pick ``compute_dtype=bfloat16`` on a CPU with native
        bfloat16: any family with the field, unless it narrows this (e.g. the VAE's convolutional networks)."""
        return self.declared_compute_dtype is not None


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    name: str
    model_name: str  # a key of the model registry
    model: ModelConfig
    data: DataConfig = DataConfig()
    players: tuple[PlayerConfig, ...] = (PlayerConfig(),)
    train: TrainConfig = TrainConfig()
    mesh: str = ""  # e.g. "data=4,fsdp=2"; empty: every device on the data axis

    def player(self, name: str) -> PlayerConfig:
        for p in self.players:
            if p.name == name:
                return p
        raise KeyError(name)


# ----------------------------------------------------------------------------------------------------------------
# Overrides.


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a comma-separated list of " + _describe(typing.get_args(tp)[0])
    if tp is type(None):
        return "none"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def parse_value(text: str, tp, key: str) -> Any:
    """Parse `text` to type `tp`; raise UserError naming the key and the accepted values."""
    origin = typing.get_origin(tp)
    try:
        if origin is Literal:
            choices = typing.get_args(tp)
            for c in choices:
                if str(c) == text:
                    return c
            raise ValueError
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if type(None) in args and text.lower() in ("none", "null", ""):
                return None
            for a in args:
                if a is type(None):
                    continue
                try:
                    return parse_value(text, a, key)
                except UserError:
                    pass
            raise ValueError
        if origin is tuple:
            (elem, *rest) = typing.get_args(tp)
            if not text:
                return ()
            return tuple(parse_value(t.strip(), elem, key) for t in text.split(","))
        if tp is bool:
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            v = float(text)
            if not math.isfinite(v):
                raise UserError(f"bad value {text!r} for {key}: expected a finite number")
            return v
        if tp is str:
            return text
    except ValueError:
        pass
    raise UserError(f"bad value {text!r} for {key}: expected {_describe(tp)}")


def _set_path(obj, path: list[str], text: str, full_key: str):
    if not dataclasses.is_dataclass(obj):
        raise UserError(f"unknown config key {full_key!r}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    head, rest = path[0], path[1:]
    if head not in fields:
        raise UserError(
            f"unknown config key {full_key!r}: {head!r} is not one of {', '.join(sorted(fields))}"
        )
    current = getattr(obj, head)
    tp = _hints(type(obj))[head]
    if not rest:
        if dataclasses.is_dataclass(current):
            sub = ", ".join(f"{head}.{f.name}" for f in dataclasses.fields(current))
            raise UserError(f"config key {full_key!r} is a group; set one of its fields: {sub}")
        return dataclasses.replace(obj, **{head: parse_value(text, tp, full_key)})
    if isinstance(current, tuple) and current and all(
        dataclasses.is_dataclass(c) and hasattr(c, "name") for c in current
    ):
        names = [c.name for c in current]
        if rest[0] not in names:
            raise UserError(f"unknown config key {full_key!r}: {head} are named {', '.join(names)}")
        new = tuple(
            _set_path(c, rest[1:], text, full_key) if c.name == rest[0] and rest[1:] else c for c in current
        )
        if not rest[1:]:
            raise UserError(f"config key {full_key!r} is a group; set one of its fields")
        return dataclasses.replace(obj, **{head: new})
    return dataclasses.replace(obj, **{head: _set_path(current, rest, text, full_key)})


def apply_overrides(config, overrides: list[str] | tuple[str, ...]):
    """Apply `key=value` strings to a frozen dataclass config; returns a new config."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"bad override {item!r}: expected key=value, e.g. train.steps=100")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"bad override {item!r}: expected key=value, e.g. train.steps=100")
        config = _set_path(config, key.split("."), text.strip(), key)
    validate(config)
    return config


SEED_MAX = 2**63 - 1  # seeds become int64 (jax.random.key, Grain's shuffle)


def check_seed(seed, where: str = "--seed") -> int:
    """``seed`` if it is an integer in 0..2**63-1, else a UserError naming ``where``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= SEED_MAX:
        raise UserError(f"bad value {seed} for {where}: expected an integer in 0..{SEED_MAX}")
    return int(seed)


def validate(config: ExperimentConfig) -> None:
    """Range checks that the types alone cannot express."""
    t, d = config.train, config.data
    positive = {
        "train.steps": t.steps,
        "train.log_every": t.log_every,
        "train.checkpoint_every": t.checkpoint_every,
        "train.keep_checkpoints": t.keep_checkpoints,
        "train.num_samples": t.num_samples,
        "train.population": t.population,
        "data.batch_size": d.batch_size,
        "data.eval_batch_size": d.eval_batch_size,
    }
    for k, v in {"data.seed": d.seed, "train.seed": t.seed}.items():
        check_seed(v, k)
    if not (math.isfinite(t.checkpoint_every_secs) and t.checkpoint_every_secs >= 0):
        raise UserError(f"bad value {t.checkpoint_every_secs} for train.checkpoint_every_secs: expected 0 (off) or "
                        "a positive number of seconds")
    if not 0.0 < d.train_fraction < 1.0:
        raise UserError(f"bad value {d.train_fraction} for data.train_fraction: expected a fraction in (0, 1)")
    if d.read_threads < 0:
        raise UserError(f"bad value {d.read_threads} for data.read_threads: expected 0 or a positive integer")
    for k, v in positive.items():
        if v <= 0:
            raise UserError(f"bad value {v} for {k}: expected a positive integer")
    for k, v in {"train.eval_every": t.eval_every, "train.sample_every": t.sample_every,
                 "train.num_eval_batches": t.num_eval_batches}.items():
        if v < 0:
            raise UserError(f"bad value {v} for {k}: expected 0 (off) or a positive integer")
    if t.population_lr_scale and (len(t.population_lr_scale) != t.population or not all(
            math.isfinite(x) and x > 0 for x in t.population_lr_scale)):
        raise UserError(f"bad value {','.join(f'{x:g}' for x in t.population_lr_scale)} for "
                        f"train.population_lr_scale: expected one positive factor per member of the population "
                        f"(train.population={t.population})")
    if t.lora:
        from aigc_jax.core.lora import parse_lora

        parse_lora(t.lora, t.lora_alpha)
    if not any(p.ema_decay > 0 for p in config.players) and t.sample_weights == "ema":
        raise UserError("train.sample_weights=ema needs a moving average: set players.NAME.ema_decay (0 < decay < 1)")
    for p in config.players:
        if not (math.isfinite(p.ema_decay) and 0.0 <= p.ema_decay < 1.0):
            raise UserError(f"bad value {p.ema_decay} for players.{p.name}.ema_decay: expected 0 (no average) or a "
                            "decay in (0, 1)")
        o = p.optim
        for k, v in dataclasses.asdict(o).items():
            if isinstance(v, float) and not math.isfinite(v):
                raise UserError(f"bad value {v} for players.{p.name}.optim.{k}: expected a finite number")
        if o.lr <= 0:
            raise UserError(f"bad value {o.lr} for players.{p.name}.optim.lr: expected a positive number")
        if o.freeze:
            import re

            try:
                re.compile(o.freeze)
            except re.error as e:
                raise UserError(f"bad value {o.freeze!r} for players.{p.name}.optim.freeze: not a regular "
                                f"expression ({e})") from None
        if o.warmup_steps < 0 or o.clip_norm < 0 or p.updates_per_step < 1 or o.accumulate_steps < 1:
            raise UserError(f"bad optimizer settings for player {p.name!r}: warmup_steps and clip_norm must be "
                            ">= 0, updates_per_step and accumulate_steps >= 1")
    check = getattr(config.model, "validate", None)
    if check is not None:
        check()
    if getattr(config.model, "needs_binary_data", False) and d.binarize == "none":
        raise UserError(f"{config.model_name} models binary pixels (a Bernoulli likelihood): set "
                        "data.binarize=dynamic; on grey-level data its NLL would not be a likelihood")


# ----------------------------------------------------------------------------------------------------------------
# JSON round trip.


def to_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _from_value(tp, value, key: str):
    """``value`` (parsed JSON) as type ``tp``; a UserError naming ``key`` when it is not one (a hand-edited file)."""
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key=key)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list) or (len(args) != 2 or args[1] is not Ellipsis) and len(value) != len(args):
            raise UserError(f"{key} is {json.dumps(value)}: expected {_describe(tp)}")
        elems = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        return tuple(_from_value(e, v, f"{key}[{i}]") for i, (e, v) in enumerate(zip(elems, value, strict=True)))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for a in typing.get_args(tp):
            if a is not type(None):
                try:
                    return _from_value(a, value, key)
                except UserError:
                    pass
        raise UserError(f"{key} is {json.dumps(value)}: expected {_describe(tp)}")
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        str: lambda v: isinstance(v, str),
    }
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise UserError(f"{key} is {json.dumps(value)}: expected {_describe(tp)}")
    elif tp in ok and not ok[tp](value):
        raise UserError(f"{key} is {json.dumps(value)}: expected {_describe(tp)}")
    return float(value) if tp is float else value


def from_dict(cls, data: dict, model_config_cls=None, key: str = "config"):
    """Rebuild a config dataclass from `to_dict` output; `model_config_cls` types `ExperimentConfig.model`. Every
    value is checked against its field's type (a UserError names the first that is not)."""
    if not isinstance(data, dict):
        raise UserError(f"{key} is {json.dumps(data)[:60]}: expected an object")
    hints = _hints(cls)
    kwargs = {}
    stored_defaults = getattr(cls, "STORED_DEFAULTS", {})
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.name in stored_defaults:
                kwargs[f.name] = stored_defaults[f.name]
            continue
        tp = hints[f.name]
        if cls is ExperimentConfig and f.name == "model":
            kwargs[f.name] = from_dict(model_config_cls, data[f.name], key="model")
        else:
            kwargs[f.name] = _from_value(tp, data[f.name], f.name if key == "config" else f"{key}.{f.name}")
    return cls(**kwargs)
