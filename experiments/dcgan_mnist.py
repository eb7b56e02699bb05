"""DCGAN (Radford et al. 2015) on MNIST at 28x28: batch-norm generator and discriminator, non-saturating loss,
Adam(2e-4, beta1 0.5), batch 64, an exponential moving average of the generator (decay 0.999) for sampling.

Sized for a 2-core CPU: convolution widths 64/32 in G and 32/64 in D, with 1024-unit linear layers (two after z in
G, one before the output in D, after InfoGAN's MNIST networks): matmuls are cheap next to convolutions under
XLA:CPU. At 2000 steps (lenet IS on 2000 samples) no hidden layers gave 5.1, one in each 7.5, a second one in G
8.0 (a second one in D: 7.4). 13,000 steps take about 19 minutes here.

    aigc-jax train dcgan-mnist
    aigc-jax eval runs/dcgan-mnist          # lenet-mnist IS, FID, KID, precision/recall on 10k samples
"""

from aigc_jax.models.gan import GANConfig

from ._common import gan_experiment, tiny, variant


def base():
    model = GANConfig(image_shape=(28, 28, 1), latent_dim=64, g_hidden=(1024, 1024), g_channels=(64, 32),
                      d_channels=(32, 64), d_hidden=(1024,), g_norm="batch", d_norm="batch", loss="non_saturating",
                      ema_decay=0.999)
    return gan_experiment("dcgan-mnist", model, steps=13000, every=2000)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(8, 4), d_channels=(4, 8),
                                                           g_hidden=(16,), d_hidden=(16,), latent_dim=8)})
