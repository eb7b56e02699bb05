"""Helpers shared by the experiment files."""

from __future__ import annotations

import dataclasses

from aigc_jax.core.config import ExperimentConfig, TrainConfig

MNIST_TRAIN = 60_000


def epochs_to_steps(epochs: int, batch_size: int, examples: int = MNIST_TRAIN) -> int:
    return epochs * (examples // batch_size)


def tiny(config: ExperimentConfig, **model_changes) -> ExperimentConfig:
    """A few-step, small-model version of an experiment for the CPU test suite."""
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, **model_changes),
        data=dataclasses.replace(config.data, batch_size=16, eval_batch_size=32),
        train=TrainConfig(steps=4, log_every=2, eval_every=0, sample_every=0, checkpoint_every=2,
                          keep_checkpoints=2, num_eval_batches=2, num_samples=8),
    )


def variant(name: str, variants: dict):
    if name not in variants:
        raise KeyError(name)
    return variants[name]()
