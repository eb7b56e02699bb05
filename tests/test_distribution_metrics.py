"""FID, KID, IS and precision/recall against closed forms and limiting cases."""

import numpy as np
import pytest

from aigc_jax.metrics import distribution as dm


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    v1, v2 = np.array([1.0, 2.0, 0.5]), np.array([4.0, 0.5, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    assert dm.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    x = np.random.default_rng(0).normal(size=(2000, 8))
    assert abs(dm.fid(x, x)) < 1e-8
    assert dm.fid(x, x + 1.0) == pytest.approx(8.0, rel=1e-6)  # a mean shift of 1 in each of 8 dims


def test_fid_of_singular_covariances_uses_the_eps_retry():
    x = np.random.default_rng(1).normal(size=(5, 16))  # rank-deficient covariance (N < D)
    assert np.isfinite(dm.fid(x, x[::-1] * 1.1))


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(1500, 16)), rng.normal(size=(1500, 16))
    mean, std = dm.kid(a, b, num_subsets=20, subset_size=500)
    assert abs(mean) < 3 * std + 1e-3
    shifted, _ = dm.kid(a, b + 0.5, num_subsets=20, subset_size=500)
    assert shifted > 10 * max(std, 1e-4)


def test_inception_score_limits():
    k = 10
    confident_uniform = np.eye(k)[np.arange(1000) % k]
    assert dm.inception_score(confident_uniform, splits=5)[0] == pytest.approx(k)
    constant = np.tile(np.full(k, 1.0 / k), (1000, 1))
    assert dm.inception_score(constant, splits=5)[0] == pytest.approx(1.0)
    one_class = np.eye(k)[np.zeros(1000, int)]
    assert dm.inception_score(one_class, splits=5)[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="rows sum to 1"):
        dm.inception_score(np.ones((10, 3)))


def test_precision_recall_limits():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(400, 4))
    assert dm.precision_recall(real, real.copy()) == (1.0, 1.0)
    far = rng.normal(size=(400, 4)) + 100.0
    assert dm.precision_recall(real, far) == (0.0, 0.0)
    # Fakes collapsed onto a small part of the real data: high precision, low recall (mode collapse).
    collapsed = real[np.argsort(real[:, 0])[:40]][rng.integers(0, 40, 400)] + 1e-3 * rng.normal(size=(400, 4))
    p, r = dm.precision_recall(real, collapsed)
    assert p > 0.9 and r < 0.3
