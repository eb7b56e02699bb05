"""MLP VAE (Kingma & Welling 2013) on dynamically binarized MNIST: 784-500-500-50, Bernoulli decoder.

Adam 1e-3 with cosine decay, batch 128, 50 epochs (23,400 steps).

    aigc-jax train vae-mnist
    aigc-jax eval runs/vae-mnist          # -ELBO and IWAE (k=1000) NLL in nats on the test split
"""

from aigc_jax.core.config import DataConfig, ExperimentConfig, OptimConfig, PlayerConfig, TrainConfig
from aigc_jax.models.vae import VAEConfig
from experiments._common import epochs_to_steps, tiny, variant


def base() -> ExperimentConfig:
    steps = epochs_to_steps(50, 128)
    return ExperimentConfig(
        name="vae-mnist",
        model_name="vae",
        model=VAEConfig(arch="mlp", hidden=(500, 500), latent_dim=50, likelihood="bernoulli"),
        data=DataConfig(name="mnist", batch_size=128, eval_batch_size=500, binarize="dynamic"),
        players=(PlayerConfig(name="vae", optim=OptimConfig(name="adam", lr=1e-3, schedule="cosine")),),
        train=TrainConfig(steps=steps, log_every=200, eval_every=2340, sample_every=2340, checkpoint_every=2340,
                          keep_checkpoints=3, num_samples=100),
    )


def get_config(name: str = "") -> ExperimentConfig:
    return variant(name, {"": base, "tiny": lambda: tiny(base(), hidden=(32,), latent_dim=4, iwae_samples=10,
                                                           iwae_chunk=5)})
