"""Evaluation of a run's state: the metric groups a model declares (``spec.metrics``), computed in one place.

Groups (see `aigc_jax.core.contract.METRIC_GROUPS`): ``loss`` (the model's own per-example test metrics,
averaged: ``test_<name>``), ``nll`` (from the declared likelihood: `aigc_jax.metrics.likelihood`), and for image
generators the sample metrics ``fid``, ``kid``, ``is``, ``pr``, ``label_accuracy``
(`aigc_jax.metrics.sample_quality`).
"""

from __future__ import annotations

import jax

from aigc_jax.core.contract import SAMPLE_METRIC_GROUPS
from aigc_jax.core.errors import UserError
from aigc_jax.data import sources
from aigc_jax.data.pipeline import EVAL_KEY, masked_sums
from aigc_jax.train.step import averaged_state


def evaluate(setup, state, split: str = "test", max_batches: int | None = None, seed: int = 0,
             max_examples: int = 0) -> dict:
    """Mean of the model's per-example eval metrics over a split's first ``max_examples`` (0: all; and at most
    ``max_batches`` batches, default ``train.num_eval_batches``), with the count under ``"examples"``.
    Deterministic: fixed keys per batch, and a fixed data transform per example (see `eval_batches`)."""
    cfg = setup.config
    nb = cfg.train.num_eval_batches if max_batches is None else max_batches
    totals, count = masked_sums(lambda b, m, k: setup.eval_step(state, b, m, k),
                                sources.for_experiment(cfg, split, setup.model.spec), cfg.data.eval_batch_size,
                                setup.batch_sharding, jax.random.key(seed + EVAL_KEY), nb, max_examples)
    return {**{k: float(v) / count for k, v in totals.items()}, "examples": int(count)}


def resolve_metrics(model, name: str, metrics=None) -> tuple[str, ...]:
    """The metric groups to compute: ``metrics`` (a list, or a comma-separated string) checked against the model's
    declaration, or its ``default_metrics`` when empty."""
    spec = model.spec
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    wanted = tuple(metrics or spec.default_metrics)
    unknown = [m for m in wanted if m not in spec.metrics]
    if unknown:
        raise UserError(f"{','.join(unknown)} not available for {name}; expected a subset of "
                        f"{','.join(spec.metrics)}")
    return wanted


def evaluate_state(setup, state, step: int, metrics=None, *, num_samples: int | None = None, seed: int | None = None,
                   importance_samples: int = 0, extractor: str = "", extractor_options: dict | None = None,
                   progress: bool = True) -> dict:
    """The requested (default: declared default) metric groups of ``state`` on the test split, as one flat dict
    (what ``eval.json`` holds). ``num_samples``: test examples for ``loss``/``nll`` (default: all), generated
    samples for the sample metrics (default 10,000); ``seed`` defaults to the run's ``train.seed``."""
    cfg = setup.config
    model = setup.model
    wanted = resolve_metrics(model, cfg.name, metrics)
    if num_samples is not None and num_samples < 1:
        raise UserError(f"num_samples={num_samples}: expected a positive integer (default: all test examples / "
                        "10000 samples)")
    if importance_samples < 0:
        raise UserError(f"importance samples {importance_samples}: expected a positive integer")
    seed = cfg.train.seed if seed is None else seed
    result: dict = {"experiment": cfg.name, "step": step, "split": "test", "dataset": cfg.data.name,
                    "metrics": list(wanted)}
    if model.spec.output == "image":
        result["binarize"] = cfg.data.binarize
    if importance_samples and "nll" not in wanted:
        raise UserError("importance samples are for the nll metric; add it to the metrics")
    if (extractor or extractor_options) and not any(m in SAMPLE_METRIC_GROUPS for m in wanted):
        raise UserError("a feature extractor is for the sample metrics (fid, kid, is, pr, label_accuracy)")
    options = dict(num_samples=num_samples, seed=seed, importance_samples=importance_samples, extractor=extractor,
                   extractor_options=extractor_options, progress=progress)
    result.update(_metric_groups(setup, state, wanted, **options))
    if "ema" in state:  # the trainer's moving averages, reported beside the raw weights
        averaged = _metric_groups(setup, averaged_state(state), wanted, **options)
        result["ema_players"] = sorted(state["ema"])
        result.update({f"ema_{k}": v for k, v in averaged.items() if isinstance(v, float)})
    return result


def _metric_groups(setup, state, wanted, *, num_samples, seed, importance_samples, extractor, extractor_options,
                   progress) -> dict:
    from aigc_jax.metrics.likelihood import likelihood_metrics
    from aigc_jax.metrics.sample_quality import evaluate_samples

    out: dict = {}
    if "loss" in wanted:
        out.update({f"test_{k}": v for k, v in evaluate(setup, state, max_batches=0, seed=seed,
                                                        max_examples=num_samples or 0).items()})
    if "nll" in wanted:
        out.update(likelihood_metrics(setup, state, max_examples=num_samples or 0, seed=seed,
                                      importance_samples=importance_samples, progress=progress))
    sample_metrics = tuple(m for m in wanted if m in SAMPLE_METRIC_GROUPS)
    if sample_metrics:
        out.update(evaluate_samples(setup, state, sample_metrics, extractor=extractor,
                                    num_samples=num_samples or 10_000, extractor_options=extractor_options,
                                    seed=seed, batch_size=min(setup.config.data.eval_batch_size, 500),
                                    progress=progress))
    return out
