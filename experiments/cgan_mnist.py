"""Class-conditional GAN on MNIST: the dcgan-mnist networks with the one-hot label beside z in the generator and a
projection discriminator (Miyato & Koyama 2018): output = linear(phi(x)) + <embed(y), phi(x)> on the 1024-unit
features, spectrally normalised (embedding included), hinge loss, a minibatch-std feature; Adam(2e-4, 0.5), batch
64, generator moving average 0.999. `aigc-jax sample --label L` draws digit L.

Why spectral norm, hinge and the minibatch-std feature: benchmarks/README.md ("GANs").

    aigc-jax train cgan-mnist
    aigc-jax eval runs/cgan-mnist            # adds label_accuracy: lenet-mnist agrees with the asked-for label
    aigc-jax sample runs/cgan-mnist --label 7 --num 64 --out sevens.png
"""

from aigc_jax.models.gan import GANConfig

from ._common import gan_experiment, tiny, variant


def base():
    model = GANConfig(image_shape=(28, 28, 1), latent_dim=64, g_hidden=(1024,), g_channels=(64, 32),
                      d_channels=(32, 64), d_hidden=(1024,), g_norm="batch", d_norm="none", loss="hinge",
                      spectral_norm=True, minibatch_std=True, ema_decay=0.999, num_classes=10)
    return gan_experiment("cgan-mnist", model, steps=6000, every=2000)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(8, 4), d_channels=(4, 8),
                                                           g_hidden=(16,), d_hidden=(16,), latent_dim=8,
                                                           loss="hinge", spectral_norm=True, d_norm="none")})
