"""WGAN-GP (Gulrajani et al. 2017) on MNIST at 28x28: a critic without batch norm (layer norm, the paper's suggested
drop-in), gradient penalty lambda = 10, Adam(1e-4, beta1 0, beta2 0.9) for both players, as in the paper.

Sized for 20 minutes of a 2-core CPU, three choices depart from the paper's MNIST run (n_critic 5, batch 64,
200,000 generator updates): n_critic = 1 on batches of 32 (within a fixed time, more generator updates win), and a
generator with five 1024-unit hidden layers between z and the convolutions (matmuls on a batch of 32 are cheap next
to the critic's penalised updates). The critic's convolutions are lowered as patch matmuls (`d_conv="matmul"`: the
same function, faster under XLA:CPU with the penalty's second-order gradients). 10,500 steps; the results and the
generator-depth sweep are in README.md and benchmarks/README.md ("WGAN-GP: generator depth").

    aigc-jax train wgan-gp-mnist
    aigc-jax eval runs/wgan-gp-mnist
"""

from aigc_jax.models.gan import GANConfig

from ._common import gan_experiment, tiny, variant


def base():
    model = GANConfig(image_shape=(28, 28, 1), latent_dim=64, g_hidden=(1024,) * 5, g_channels=(64, 32),
                      d_channels=(32, 64), d_hidden=(1024,), g_norm="batch", d_norm="layer", d_conv="matmul",
                      loss="wgan_gp", gp_weight=10.0, ema_decay=0.999)
    return gan_experiment("wgan-gp-mnist", model, steps=10500, lr=1e-4, betas=(0.0, 0.9), n_critic=1,
                          batch_size=32, every=1000)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(8, 4), d_channels=(4, 8),
                                                           g_hidden=(16,), d_hidden=(16,), latent_dim=8)})
