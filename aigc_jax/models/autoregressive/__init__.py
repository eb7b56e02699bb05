"""Autoregressive models: GPT (and gated PixelCNN, to come)."""

from aigc_jax.models.autoregressive.gpt import GPT as GPT
from aigc_jax.models.autoregressive.gpt import GPTConfig as GPTConfig
