"""Conditional VAE (Sohn et al. 2015) on dynamically binarized MNIST: the digit label, one-hot, enters both the
encoder and the decoder, so `aigc-jax sample --label L` draws digit L; latent 20, 20 epochs.

    aigc-jax train cvae-mnist
    aigc-jax sample runs/cvae-mnist --num 64 --label 3 --out threes.png
"""

from aigc_jax.models.vae import VAEConfig

from ._common import mnist_experiment, tiny, variant


def base():
    model = VAEConfig(arch="mlp", hidden=(500, 500), latent_dim=20, num_classes=10, likelihood="bernoulli")
    return mnist_experiment("cvae-mnist", "vae", model, epochs=20)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), hidden=(32,), latent_dim=4, iwae_samples=10,
                                                           iwae_chunk=5)})
