"""WGAN-GP (Gulrajani et al. 2017) on MNIST at 28x28: a critic without batch norm, gradient penalty lambda = 10,
n_critic = 5 critic updates per generator update (each on its own batch of 64), Adam(1e-4, beta1 0, beta2 0.9)
for both players, as in the paper. The networks are dcgan-mnist's (1024-unit linear layers included) without batch
norm in the critic; the generator keeps batch norm and a moving average (decay 0.999).

    aigc-jax train wgan-gp-mnist
    aigc-jax eval runs/wgan-gp-mnist
"""

from aigc_jax.models.gan import GANConfig
from experiments._common import gan_experiment, tiny, variant


def base():
    model = GANConfig(image_shape=(28, 28, 1), latent_dim=64, g_hidden=(1024,), g_channels=(64, 32),
                      d_channels=(32, 64), d_hidden=(1024,), g_norm="batch", d_norm="none", loss="wgan_gp",
                      gp_weight=10.0, ema_decay=0.999)
    return gan_experiment("wgan-gp-mnist", model, steps=1500, lr=1e-4, betas=(0.0, 0.9), n_critic=5, every=500)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(8, 4), d_channels=(4, 8),
                                                           g_hidden=(16,), d_hidden=(16,), latent_dim=8)})
