"""Diffusion and flow family: processes (DDPM, flow matching), the U-Net backbone, samplers (DDIM/DDPM, Euler,
Heun) and classifier-free guidance; `latent` runs the flow on the latent of an autoencoder trained beside it."""

from aigc_jax.models.diffusion.latent import LatentFlowConfig as LatentFlowConfig
from aigc_jax.models.diffusion.latent import LatentFlowModel as LatentFlowModel
from aigc_jax.models.diffusion.model import DDPMConfig as DDPMConfig
from aigc_jax.models.diffusion.model import DDPMModel as DDPMModel
from aigc_jax.models.diffusion.model import FlowConfig as FlowConfig
from aigc_jax.models.diffusion.model import FlowModel as FlowModel
from aigc_jax.models.diffusion.model import UNetConfig as UNetConfig
