"""The VAE family."""

from aigc_jax.models.vae.model import VAE as VAE
from aigc_jax.models.vae.model import VAEConfig as VAEConfig
