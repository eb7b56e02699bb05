"""beta-VAE (Higgins et al. 2017) on dynamically binarized MNIST: an MLP VAE, latent 10, KL weighted by beta = 4;
20 epochs.

Reported -ELBO and IWAE NLL always use beta = 1; the training loss uses beta.

    aigc-jax train beta-vae-mnist
"""

from aigc_jax.models.vae import VAEConfig

from ._common import mnist_experiment, tiny, variant


def base():
    model = VAEConfig(arch="mlp", hidden=(500, 500), latent_dim=10, beta=4.0, likelihood="bernoulli")
    return mnist_experiment("beta-vae-mnist", "vae", model, epochs=20)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), hidden=(32,), latent_dim=4, iwae_samples=10,
                                                           iwae_chunk=5)})
