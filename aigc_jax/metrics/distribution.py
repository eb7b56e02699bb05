"""Sample-quality metrics on feature vectors: FID, KID, Inception Score, precision and recall.

All take float features (``[N, D]``; class probabilities ``[N, K]`` for IS) as numpy arrays and compute in
float64 on the host, as the reference tools do. The feature extractor (and its resize policy) is chosen by the
caller and must be recorded beside every number: two FIDs are comparable only with the same extractor, data
split and sample counts.

References: Heusel et al. 2017 (FID; the matrix square root, eps retry and imaginary-part check follow
pytorch-fid's `calculate_frechet_distance`); Binkowski et al. 2018 (KID: unbiased MMD^2 with the cubic polynomial
kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets); Salimans et al. 2016 (IS, over splits);
Kynkaanniemi et al. 2019 (precision/recall with k-NN radii, k = 3).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of features, in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be [N >= 2, D], got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians.

    When the product is near singular, ``eps`` is added to both diagonals and the square root recomputed; an
    imaginary part larger than 1e-3 on the diagonal is an error (numerical failure), smaller ones are dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("the two sets of statistics have different dimensions")
    diff = mu1 - mu2
    # A singular product is expected with fewer samples than feature dimensions; the finiteness check below handles
    # it, so SciPy's warning is not shown (pytorch-fid passes disp=False, which SciPy 1.18 removes: same value).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1.dot(s2))
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))} in the matrix square root")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def kid(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over subsets of the unbiased MMD^2 estimate."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(num_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
               - 2 * kxy.mean())
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of the samples; mean and std over splits."""
    p = np.asarray(probs, np.float64)
    if p.ndim != 2 or not np.allclose(p.sum(1), 1, atol=1e-4) or p.min() < 0:
        raise ValueError("inception_score takes class probabilities [N, K] whose rows sum to 1")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _knn_radii(f: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(np.maximum(_sqdist(f, f), 0))
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (fraction of fakes inside the real manifold: within some real point's k-NN radius) and
    recall (fraction of reals inside the fake manifold)."""
    r, f = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(r) <= k or len(f) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples in each set")
    rr, rf = _knn_radii(r, k), _knn_radii(f, k)
    d_fr = np.sqrt(np.maximum(_sqdist(f, r), 0))  # [F, R]
    precision = float(np.mean((d_fr <= rr[None, :]).any(1)))
    recall = float(np.mean((d_fr.T <= rf[None, :]).any(1)))
    return precision, recall
