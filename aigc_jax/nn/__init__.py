"""Shared layers (attention, dense products, dropout, im2col patches, moving averages) for the model families.

The hand-written kernels (`dense`, `causal_attention`) are plain ``jax.numpy`` by default, differentiable in every
mode; inside `reverse_mode_kernels` they use their faster, reverse-mode-only VJPs (see `aigc_jax.nn.kernels`).
"""

from aigc_jax.nn.attention import causal_attention as causal_attention
from aigc_jax.nn.ema import ema_update as ema_update
from aigc_jax.nn.ema import ema_warmup_decay as ema_warmup_decay
from aigc_jax.nn.kernels import reverse_mode_kernels as reverse_mode_kernels
from aigc_jax.nn.kernels import reverse_mode_kernels_enabled as reverse_mode_kernels_enabled
from aigc_jax.nn.layers import ParamKeys as ParamKeys
from aigc_jax.nn.layers import conv_as_matmul as conv_as_matmul
from aigc_jax.nn.layers import depth_to_space as depth_to_space
from aigc_jax.nn.layers import dropout as dropout
from aigc_jax.nn.layers import patches as patches
from aigc_jax.nn.layers import space_to_depth as space_to_depth
from aigc_jax.nn.linear import add_bias as add_bias
from aigc_jax.nn.linear import dense as dense
