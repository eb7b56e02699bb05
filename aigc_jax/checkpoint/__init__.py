"""Orbax checkpoint wrapper."""

from aigc_jax.checkpoint.manager import Checkpointer as Checkpointer
from aigc_jax.checkpoint.manager import abstract_with_shardings as abstract_with_shardings
