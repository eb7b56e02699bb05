"""Orbax checkpoint wrapper."""

from aigc_jax.checkpoint.manager import Checkpointer as Checkpointer
