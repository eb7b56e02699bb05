"""The one trainer: state, step builder, loop, writers."""

from aigc_jax.train.loop import evaluate as evaluate
from aigc_jax.train.loop import sample_images as sample_images
from aigc_jax.train.loop import train as train
from aigc_jax.train.setup import Setup as Setup
from aigc_jax.train.setup import build_setup as build_setup
