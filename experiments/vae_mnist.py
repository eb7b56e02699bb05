"""MLP VAE (Kingma & Welling 2013) on dynamically binarized MNIST: 784-500-500-50, Bernoulli decoder.

Adam 1e-3 with cosine decay, batch 128, 50 epochs (23,400 steps).

    aigc-jax train vae-mnist
    aigc-jax eval runs/vae-mnist          # -ELBO and IWAE (k=1000) NLL in nats on the test split
"""

from aigc_jax.models.vae import VAEConfig

from ._common import mnist_experiment, tiny, variant


def base():
    model = VAEConfig(arch="mlp", hidden=(500, 500), latent_dim=50, likelihood="bernoulli")
    return mnist_experiment("vae-mnist", "vae", model, epochs=50)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), hidden=(32,), latent_dim=4, iwae_samples=10,
                                                           iwae_chunk=5)})
