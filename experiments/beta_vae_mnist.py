"""beta-VAE (Higgins et al. 2017) on dynamically binarized MNIST: the MLP VAE with the KL weighted by beta = 4.

Reported -ELBO and IWAE NLL always use beta = 1; the training loss uses beta.

    aigc-jax train beta-vae-mnist
"""

from aigc_jax.core.config import DataConfig, ExperimentConfig, OptimConfig, PlayerConfig, TrainConfig
from aigc_jax.models.vae import VAEConfig
from experiments._common import epochs_to_steps, tiny, variant


def base() -> ExperimentConfig:
    steps = epochs_to_steps(20, 128)
    return ExperimentConfig(
        name="beta-vae-mnist",
        model_name="vae",
        model=VAEConfig(arch="mlp", hidden=(500, 500), latent_dim=10, beta=4.0, likelihood="bernoulli"),
        data=DataConfig(name="mnist", batch_size=128, eval_batch_size=500, binarize="dynamic"),
        players=(PlayerConfig(name="vae", optim=OptimConfig(name="adam", lr=1e-3, schedule="cosine")),),
        train=TrainConfig(steps=steps, log_every=200, eval_every=2340, sample_every=2340, checkpoint_every=2340,
                          num_samples=100),
    )


def get_config(name: str = "") -> ExperimentConfig:
    return variant(name, {"": base, "tiny": lambda: tiny(base(), hidden=(32,), latent_dim=4, iwae_samples=10,
                                                           iwae_chunk=5)})
