"""Diffusion and flow family: processes (DDPM, flow matching), the U-Net backbone, samplers (DDIM/DDPM, Euler,
Heun) and classifier-free guidance."""

from aigc_jax.models.diffusion.model import DDPMConfig as DDPMConfig
from aigc_jax.models.diffusion.model import DDPMModel as DDPMModel
from aigc_jax.models.diffusion.model import FlowConfig as FlowConfig
from aigc_jax.models.diffusion.model import FlowModel as FlowModel
