"""Sample-quality evaluation of a trained image model: FID, KID, Inception Score, precision/recall and (for
class-conditional models) the accuracy of the asked-for labels, all through one named feature extractor.

Real-data features are computed once per (extractor id, dataset, split, count, sha256 of the images' bytes) and
cached as ``.npz`` in ``$AIGC_JAX_CACHE`` (default ``~/.cache/aigc_jax``); the file records the same five fields
and is recomputed when any differs, so a data file edited in place or another file of the same name never reuses a
stale cache. Every result records them too: two numbers are comparable only when all of them match.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from aigc_jax.core.contract import SAMPLE_METRIC_GROUPS, sampling_params, validate_settings
from aigc_jax.core.errors import UserError
from aigc_jax.metrics import distribution
from aigc_jax.metrics.features import FeatureExtractor, get_extractor

SAMPLE_METRICS = SAMPLE_METRIC_GROUPS
IS_SPLITS = 10  # Inception Score splits (Salimans et al. 2016)
PR_K = 3  # neighbours for precision/recall (Kynkaanniemi et al. 2019)
MIN_SAMPLES = {"fid": 2, "kid": 2, "is": IS_SPLITS, "pr": PR_K + 1, "label_accuracy": 1}


def cache_dir() -> Path:
    return Path(os.environ.get("AIGC_JAX_CACHE", "~/.cache/aigc_jax")).expanduser()


def default_extractor(image_shape) -> str:
    """``lenet-mnist`` for 28x28 grayscale data, ``inception-v3`` otherwise."""
    return "lenet-mnist" if tuple(image_shape) == (28, 28, 1) else "inception-v3"


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text)[:80] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def reference_features(extractor: FeatureExtractor, source, dataset: str, split: str, count: int = 0,
                       batch_size: int = 500, cache: bool = True, progress: bool = True) -> dict:
    """Features and logits of the first ``count`` images (0: all) of a dataset split, from the cache if present."""
    n = len(source) if count <= 0 else min(count, len(source))
    starts = range(0, n, batch_size)

    def images_at(start):
        return source.__getitems__(np.arange(start, min(start + batch_size, n)))["image"]

    digest = hashlib.sha256()
    for start in starts:  # the images' identity (independent of the batching): cheap next to any extractor
        images = np.ascontiguousarray(images_at(start))
        if start == 0:
            digest.update(f"{images.dtype}{images.shape[1:]}".encode())
        digest.update(images.tobytes())
    meta = {"extractor": extractor.id, "dataset": dataset, "split": split, "count": n,
            "data_sha256": digest.hexdigest()}
    path = cache_dir() / f"ref_{_slug('|'.join(str(v) for v in meta.values()))}.npz"
    if cache and path.is_file():
        with np.load(path) as z:
            if all(k in z and str(z[k]) == str(v) for k, v in meta.items()):
                return {"features": z["features"], "logits": z["logits"], **meta, "cache": str(path)}
    feats, logits = [], []
    for start in tqdm(starts, desc=f"real {split} features", unit="batch", disable=not progress):
        out = extractor(images_at(start).astype(np.float32) / 255.0, batch_size=batch_size)
        feats.append(out["features"])
        logits.append(out["logits"])
    result = {"features": np.concatenate(feats), "logits": np.concatenate(logits), **meta}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{os.urandom(4).hex()}.tmp.npz")  # one per writer
        np.savez(tmp, features=result["features"], logits=result["logits"], **{k: np.asarray(v) for k, v in
                                                                              meta.items()})
        os.replace(tmp, path)
        result["cache"] = str(path)
    return result


def generate(setup, state, num: int, seed: int, batch_size: int = 500, progress: bool = True,
             settings: dict | None = None):
    """``num`` images from the model's sampler in batches (one compile), with labels ``i % K`` for conditional
    models; returns ``(images [num, H, W, C] float32 in [0, 1], labels [num] or None)``.

    ``state`` may be a list of M states of the same model (a population's members): then batch b is drawn from
    member ``b % M``, an equal-weight mixture of the members' distributions (every sample from one member).
    ``settings``: the sampler's settings (static; validated before any sampling). Batches hold ``batch_size``
    samples, or ``num`` when that is fewer."""
    model = setup.model
    states = state if isinstance(state, list | tuple) else [state]
    members = [sampling_params(model, s["params"], s["model_state"]) for s in states]
    label = model.spec.condition("label")
    ncls = label.num_classes if label is not None else 0
    settings = validate_settings(model, dict(settings or {}))
    batch_size = min(batch_size, num)  # fewer samples than a batch: one batch of exactly that many
    fn = jax.jit(lambda p, k, c: model.sample(p, k, batch_size, **c, **settings))
    key = jax.random.key(seed)
    images, labels = [], []
    for i, start in enumerate(tqdm(range(0, num, batch_size), desc="samples", unit="batch", disable=not progress)):
        cond = {}
        if ncls:
            lab = (np.arange(start, start + batch_size) % ncls).astype(np.int32)
            cond = {label.name: lab}
            labels.append(lab)
        images.append(np.asarray(fn(members[i % len(members)], jax.random.fold_in(key, i), cond), np.float32))
    imgs = np.concatenate(images)[:num]
    return imgs, (np.concatenate(labels)[:num] if ncls else None)


def evaluate_samples(setup, state, metrics: tuple[str, ...], *, extractor: str = "", num_samples: int = 10_000,
                     extractor_options: dict | None = None, seed: int = 0, batch_size: int = 500,
                     progress: bool = True, settings: dict | None = None) -> dict:
    """The requested sample metrics of a trained image model against its dataset's test split (``state``: one
    state, or a list of member states whose mixture is evaluated, see `generate`)."""
    from aigc_jax.data import sources

    unknown = [m for m in metrics if m not in SAMPLE_METRICS]
    if unknown:
        raise UserError(f"unknown sample metrics {unknown}: expected a subset of {', '.join(SAMPLE_METRICS)}")
    least = max(MIN_SAMPLES[m] for m in metrics)
    if num_samples < least:
        raise UserError(f"--num-samples {num_samples}: {', '.join(metrics)} need at least {least} samples "
                        f"(fid, kid: 2; pr: {PR_K + 1}, k = {PR_K} neighbours; is: {IS_SPLITS}, one per split)")
    cfg = setup.config
    spec = setup.model.spec
    name = extractor or default_extractor(spec.image_shape)
    if "label_accuracy" in metrics and not spec.num_classes:
        raise UserError(f"label_accuracy: {cfg.name} is not a class-conditional model")
    if "label_accuracy" in metrics and name != "lenet-mnist":
        raise UserError(f"label_accuracy needs a classifier of the dataset's classes (lenet-mnist), not {name}")
    ext = get_extractor(name, **(extractor_options or {}))
    dataset = cfg.data.name + (f":{cfg.data.path}" if cfg.data.path else "")
    ref = reference_features(ext, sources.for_experiment(cfg, "test"), dataset, "test", batch_size=batch_size,
                             progress=progress)
    images, labels = generate(setup, state, num_samples, seed, batch_size, progress, settings)
    # Samples are rounded to 8 bits, like the references and like the reference tools' inputs (PNG files for
    # pytorch-fid and TTUR, uint8 tensors for torch-fidelity and clean-fid).
    images = np.round(np.clip(images, 0.0, 1.0) * 255.0) / np.float32(255.0)
    out = ext(images, batch_size=batch_size)
    fake_f, fake_p = out["features"], _softmax(out["logits"])
    result: dict = {"extractor": ext.id, "reference": {k: ref[k] for k in ("dataset", "split", "count", "data_sha256")},
                    "num_samples": num_samples, "sample_seed": seed, "sample_quantization": "uint8"}
    if any(c.static for c in spec.conditions):
        result["sample_settings"] = validate_settings(setup.model, dict(settings or {}))
    if isinstance(state, list | tuple):
        result["mixture_of"] = len(state)
    if "fid" in metrics:
        result["fid"] = distribution.fid(ref["features"], fake_f)
    if "kid" in metrics:
        result["kid_mean"], result["kid_std"] = distribution.kid(ref["features"], fake_f, seed=seed)
    if "is" in metrics:
        result["is_mean"], result["is_std"] = distribution.inception_score(fake_p, IS_SPLITS)
        result["real_is_mean"], result["real_is_std"] = distribution.inception_score(_softmax(ref["logits"]),
                                                                                     IS_SPLITS)
    if "pr" in metrics:
        # k-NN radii over all pairs: O(N^2) memory, so at most 10k per side.
        m = min(10_000, len(ref["features"]), len(fake_f))
        result["precision"], result["recall"] = distribution.precision_recall(ref["features"][:m], fake_f[:m],
                                                                                   PR_K)
        result["pr_count"] = m
    if "label_accuracy" in metrics:
        result["label_accuracy"] = float(np.mean(np.argmax(out["logits"], axis=1) == labels))
    return result
