"""Class-conditional GAN on MNIST: the generator reads a one-hot label beside z; the discriminator is a
projection discriminator (Miyato & Koyama 2018) with spectral normalisation and the hinge loss. Adam(2e-4, 0.5),
batch 64, generator moving average 0.999. `aigc-jax sample --label L` draws digit L.

    aigc-jax train cgan-mnist
    aigc-jax eval runs/cgan-mnist            # adds label_accuracy: lenet-mnist agrees with the asked-for label
    aigc-jax sample runs/cgan-mnist --label 7 --num 64 --out sevens.png
"""

from aigc_jax.models.gan import GANConfig
from experiments._common import gan_experiment, tiny, variant


def base():
    model = GANConfig(image_shape=(28, 28, 1), latent_dim=64, g_channels=(64, 32), d_channels=(32, 64),
                      g_norm="batch", d_norm="none", loss="hinge", spectral_norm=True, ema_decay=0.999,
                      num_classes=10)
    return gan_experiment("cgan-mnist", model, steps=10_000)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(8, 4), d_channels=(4, 8),
                                                           latent_dim=8)})
