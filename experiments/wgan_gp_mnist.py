"""WGAN-GP (Gulrajani et al. 2017) on MNIST at 28x28: a critic without batch norm, gradient penalty lambda = 10,
n_critic = 5 critic updates per generator update (each on its own batch of 64), Adam(1e-4, beta1 0, beta2 0.9)
for both players, as in the paper. The networks are dcgan-mnist's (two 1024-unit layers in G, one in the critic)
without batch norm in the critic; the generator keeps batch norm and a moving average (decay 0.999). The critic's
convolutions are lowered as patch matmuls (`d_conv="matmul"`: the same function; with the penalty's second-order
gradients a step runs 1.6x faster that way under XLA:CPU), so 3,800 generator updates take 18 minutes here
(lenet IS 8.20 on 10k samples, FID 3.67: short of the issue's 9.0).

Measured on the way (lenet IS / FID on 2,000 samples): without the critic's 1024-unit layer (1.7x cheaper steps)
6.33 / 44.6 at 2,000 steps and 6.88 / 28.8 at 3,400; with it 7.58 / 9.8 at 2,000 and 8.04 / 4.5 at 3,800.
In 20 minutes (10k samples): n_critic 1 instead of the paper's 5, 11,000 steps, 8.50; n_critic 1 with batch 32,
18,000 steps, 8.62; and with layer norm in the critic, 14,500 steps, 8.65; the default with a linear decay of the
learning rate to 0, 7.72.

    aigc-jax train wgan-gp-mnist
    aigc-jax eval runs/wgan-gp-mnist
"""

from aigc_jax.models.gan import GANConfig
from experiments._common import gan_experiment, tiny, variant


def base():
    model = GANConfig(image_shape=(28, 28, 1), latent_dim=64, g_hidden=(1024, 1024), g_channels=(64, 32),
                      d_channels=(32, 64), d_hidden=(1024,), g_norm="batch", d_norm="none", d_conv="matmul",
                      loss="wgan_gp", gp_weight=10.0, ema_decay=0.999)
    return gan_experiment("wgan-gp-mnist", model, steps=3800, lr=1e-4, betas=(0.0, 0.9), n_critic=5, every=1000)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(8, 4), d_channels=(4, 8),
                                                           g_hidden=(16,), d_hidden=(16,), latent_dim=8)})
