"""The one trainer: state, step builder, the loop with its hooks, evaluation and samples of a state."""

from aigc_jax.train.evaluation import evaluate as evaluate
from aigc_jax.train.evaluation import evaluate_state as evaluate_state
from aigc_jax.train.loop import train as train
from aigc_jax.train.sampling import draw as draw
from aigc_jax.train.setup import Setup as Setup
from aigc_jax.train.setup import build_setup as build_setup
