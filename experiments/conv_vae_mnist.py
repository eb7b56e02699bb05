"""Convolutional VAE on grey-level MNIST in [0, 1] with a continuous Bernoulli likelihood
(Loaiza-Ganem & Cunningham 2019), a proper density on the unit interval.

    aigc-jax train conv-vae-mnist
"""

from aigc_jax.core.config import DataConfig, ExperimentConfig, OptimConfig, PlayerConfig, TrainConfig
from aigc_jax.models.vae import VAEConfig
from experiments._common import epochs_to_steps, tiny, variant


def base() -> ExperimentConfig:
    steps = epochs_to_steps(10, 128)
    return ExperimentConfig(
        name="conv-vae-mnist",
        model_name="vae",
        model=VAEConfig(arch="conv", channels=(32, 64), latent_dim=16, likelihood="continuous_bernoulli"),
        data=DataConfig(name="mnist", batch_size=128, eval_batch_size=500, binarize="none"),
        players=(PlayerConfig(name="vae", optim=OptimConfig(name="adam", lr=1e-3, schedule="cosine")),),
        train=TrainConfig(steps=steps, log_every=100, eval_every=1000, sample_every=1000, checkpoint_every=1000,
                          num_samples=100),
    )


def get_config(name: str = "") -> ExperimentConfig:
    return variant(name, {"": base, "tiny": lambda: tiny(base(), channels=(4,), latent_dim=4, iwae_samples=10,
                                                           iwae_chunk=5)})
