"""Convolutional VAE on dynamically binarized MNIST: two stride-2 3x3 convolutions in the encoder, a sub-pixel
convolutional decoder, latent 16, Bernoulli likelihood; 10 epochs.

    aigc-jax train conv-vae-mnist

For grey levels in [0, 1] use the continuous Bernoulli (Loaiza-Ganem & Cunningham 2019), a proper density on the
unit interval:

    aigc-jax train conv-vae-mnist --workdir runs/conv-vae-mnist-cb \\
        --set model.likelihood=continuous_bernoulli --set data.binarize=none
"""

from aigc_jax.models.vae import VAEConfig

from ._common import mnist_experiment, tiny, variant


def base():
    model = VAEConfig(arch="conv", channels=(32, 64), latent_dim=16, likelihood="bernoulli")
    return mnist_experiment("conv-vae-mnist", "vae", model, epochs=10, log_every=100, every_epochs=2)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), channels=(4,), latent_dim=4, iwae_samples=10,
                                                           iwae_chunk=5)})
