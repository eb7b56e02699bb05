"""GAN family: DCGAN, WGAN-GP, class-conditional GAN with a projection discriminator, pix2pix."""

from aigc_jax.models.gan.model import GAN as GAN
from aigc_jax.models.gan.model import GANConfig as GANConfig
from aigc_jax.models.gan.pix2pix import Pix2Pix as Pix2Pix
from aigc_jax.models.gan.pix2pix import Pix2PixConfig as Pix2PixConfig
