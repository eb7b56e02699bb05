"""Evaluation of a run's state: the metric groups a model declares (``spec.metrics``), computed in one place.

Groups (see `aigc_jax.core.contract.METRIC_GROUPS`): ``loss`` (the model's own per-example test metrics,
averaged: ``test_<name>``), ``nll`` (from the declared likelihood: `aigc_jax.metrics.likelihood`), and for image
generators the sample metrics ``fid``, ``kid``, ``is``, ``pr``, ``label_accuracy``
(`aigc_jax.metrics.sample_quality`).
"""

from __future__ import annotations

import math

import jax

from aigc_jax.core.contract import SAMPLE_METRIC_GROUPS
from aigc_jax.core.errors import UserError
from aigc_jax.data import sources
from aigc_jax.data.pipeline import EVAL_KEY, masked_sums
from aigc_jax.train.step import averaged_state

# Numbers where larger is better (the best member is the largest); every other reported number: smaller is better.
HIGHER_IS_BETTER = frozenset({"is_mean", "precision", "recall", "label_accuracy"})


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
                   progress: bool = True, settings: dict | None = None) -> dict:
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
    settings = dict(settings or {})
    if settings and not any(m in SAMPLE_METRIC_GROUPS for m in wanted):
        raise UserError(f"sampler settings ({', '.join(settings)}) are for the sample metrics (fid, kid, is, pr, "
                        "label_accuracy)")
    options = dict(num_samples=num_samples, seed=seed, importance_samples=importance_samples, extractor=extractor,
                   extractor_options=extractor_options, progress=progress, settings=settings)
    result.update(_metric_groups(setup, state, wanted, **options))
    if "ema" in state:  # the trainer's moving averages, reported beside the raw weights
        averaged = _metric_groups(setup, averaged_state(state), wanted, **options)
        result["ema_players"] = sorted(state["ema"])
        result.update({f"ema_{k}": v for k, v in averaged.items() if isinstance(v, float)})
    return result


def _metric_groups(setup, state, wanted, *, num_samples, seed, importance_samples, extractor, extractor_options,
                   progress, settings) -> dict:
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
                                    progress=progress, settings=settings))
    return out


def evaluate_population(setup, state, step: int, metrics=None, *, ensemble: bool = False, seed: int | None = None,
                        **options) -> dict:
    """`evaluate_state` of each member of a population (member i with seed ``seed + i``, as its single run would
    be), then for every number the mean, the standard deviation over members and a 95% interval of the mean
    (Student's t with K - 1 degrees of freedom), with each member's result under ``"members"``.

    ``ensemble``: also the members' mixture under ``"ensemble"``, beside the best and the mean member's value of
    each number: for ``nll``, the mixture likelihood (`aigc_jax.metrics.likelihood.ensemble_log_prob`: a
    log-mean-exp of the members' likelihoods, next-token for token models); for the sample metrics, the samples
    of the mixture that draws each sample from one member (batch b from member b % K, `sample_quality.generate`)."""
    import numpy as np
    from scipy import stats

    from aigc_jax.metrics.likelihood import likelihood_metrics
    from aigc_jax.metrics.sample_quality import evaluate_samples

    cfg = setup.config
    k = setup.population
    if k < 2:
        raise UserError(f"{cfg.name} is a single run: an ensemble needs a population (train with --population K)")
    wanted = resolve_metrics(setup.model, cfg.name, metrics)
    sample_metrics = tuple(m for m in wanted if m in SAMPLE_METRIC_GROUPS)
    if ensemble and "nll" not in wanted and not sample_metrics:
        raise UserError(f"--ensemble combines likelihoods (nll) or samples ({', '.join(SAMPLE_METRIC_GROUPS)}); "
                        f"add one of {', '.join(m for m in setup.model.spec.metrics if m != 'loss')} to the metrics")
    seed = cfg.train.seed if seed is None else seed
    states = [setup.member_state(state, i) for i in range(k)]
    members = [evaluate_state(setup.member, s, step, wanted, seed=seed + i, **options) for i, s in enumerate(states)]
    result = {key: v for key, v in members[0].items() if not isinstance(v, float)}
    result["population"] = k
    t = float(stats.t.ppf(0.975, k - 1))
    for key in [key for key, v in members[0].items() if isinstance(v, float)]:
        values = np.array([m[key] for m in members])
        mean, sd = float(values.mean()), float(values.std(ddof=1))
        result[key] = mean
        result[f"{key}_sd"] = sd
        result[f"{key}_ci95"] = [mean - t * sd / math.sqrt(k), mean + t * sd / math.sqrt(k)]
    scales = cfg.train.population_lr_scale
    if scales:  # the hyperparameter varied across members
        result["population_lr_scale"] = list(scales)
        for m, factor in zip(members, scales, strict=True):
            m["lr_scale"] = factor
    result["members"] = members
    if ensemble:
        mix: dict = {}
        if "nll" in wanted:
            mix.update(likelihood_metrics(setup, state, max_examples=options.get("num_samples") or 0, seed=seed,
                                          importance_samples=options.get("importance_samples", 0),
                                          progress=options.get("progress", True), ensemble=True))
        if sample_metrics:
            mix.update(evaluate_samples(setup.member, states, sample_metrics, extractor=options.get("extractor", ""),
                                        num_samples=options.get("num_samples") or 10_000,
                                        extractor_options=options.get("extractor_options"), seed=seed,
                                        batch_size=min(cfg.data.eval_batch_size, 500),
                                        progress=options.get("progress", True),
                                        settings=options.get("settings")))
        numbers = [key for key, v in mix.items() if isinstance(v, float) and key in members[0]
                   and not key.endswith("_std") and not key.startswith("real_")]
        result["ensemble"] = {
            **mix,
            **{f"best_member_{key}": (max if key in HIGHER_IS_BETTER else min)(m[key] for m in members)
               for key in numbers},
            **{f"mean_member_{key}": result[key] for key in numbers},
        }
    return result
