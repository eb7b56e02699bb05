"""Evaluation metrics shared by every model: likelihoods, and FID/KID/IS/precision-recall on features."""

from aigc_jax.metrics.distribution import fid as fid
from aigc_jax.metrics.distribution import frechet_distance as frechet_distance
from aigc_jax.metrics.distribution import inception_score as inception_score
from aigc_jax.metrics.distribution import kid as kid
from aigc_jax.metrics.distribution import precision_recall as precision_recall
from aigc_jax.metrics.likelihood import likelihood_metrics as likelihood_metrics
