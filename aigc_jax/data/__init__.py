"""Datasets by name, embedded data and deterministic, checkpointable pipelines."""

from aigc_jax.data.pipeline import eval_batches as eval_batches
from aigc_jax.data.pipeline import make_device_transform as make_device_transform
from aigc_jax.data.pipeline import train_iterator as train_iterator
from aigc_jax.data.sources import ArraySource as ArraySource
from aigc_jax.data.sources import get_source as get_source
from aigc_jax.data.sources import load_mnist as load_mnist
from aigc_jax.data.sources import read_idx as read_idx
