"""Evaluation metrics shared by every model (likelihoods now; FID/KID/IS/PR with the GAN family)."""

from aigc_jax.metrics.likelihood import importance_weighted_nll as importance_weighted_nll
