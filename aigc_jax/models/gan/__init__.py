"""GAN family: DCGAN, WGAN-GP, class-conditional GAN with a projection discriminator."""

from aigc_jax.models.gan.model import GAN as GAN
from aigc_jax.models.gan.model import GANConfig as GANConfig
