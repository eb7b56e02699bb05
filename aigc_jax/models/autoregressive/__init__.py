"""Autoregressive models: GPT and gated PixelCNN."""

from aigc_jax.models.autoregressive.gpt import GPT as GPT
from aigc_jax.models.autoregressive.gpt import GPTConfig as GPTConfig
from aigc_jax.models.autoregressive.pixelcnn import PixelCNN as PixelCNN
from aigc_jax.models.autoregressive.pixelcnn import PixelCNNConfig as PixelCNNConfig
