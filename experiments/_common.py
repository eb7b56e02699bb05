"""Helpers shared by the experiment files."""

from __future__ import annotations

import dataclasses

from aigc_jax.core.config import ExperimentConfig, TrainConfig

MNIST_TRAIN = 60_000


def epochs_to_steps(epochs: int, batch_size: int, examples: int = MNIST_TRAIN) -> int:
    return epochs * (examples // batch_size)


def tiny(config: ExperimentConfig, batch_size: int = 16, eval_batch_size: int = 32,
         **model_changes) -> ExperimentConfig:
    """A few-step, small-model version of an experiment for the CPU test suite."""
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, **model_changes),
        data=dataclasses.replace(config.data, batch_size=batch_size, eval_batch_size=eval_batch_size),
        train=TrainConfig(steps=4, log_every=2, eval_every=0, sample_every=0, checkpoint_every=2,
                          keep_checkpoints=2, num_eval_batches=2, num_samples=8),
    )


def variant(name: str, variants: dict):
    if name not in variants:
        raise KeyError(name)
    return variants[name]()


def mnist_experiment(name: str, model_name: str, model, *, epochs: int, binarize: str = "dynamic",
                     lr: float = 1e-3, log_every: int = 200, every_epochs: int = 5, num_samples: int = 100,
                     player: str = "vae") -> ExperimentConfig:
    """A one-player MNIST experiment: batch 128, Adam with cosine decay to 0, eval/samples/checkpoint every
    ``every_epochs`` epochs."""
    from aigc_jax.core.config import DataConfig, OptimConfig, PlayerConfig

    every = epochs_to_steps(every_epochs, 128)
    return ExperimentConfig(
        name=name,
        model_name=model_name,
        model=model,
        data=DataConfig(name="mnist", batch_size=128, eval_batch_size=500, binarize=binarize),
        players=(PlayerConfig(name=player, optim=OptimConfig(name="adam", lr=lr, schedule="cosine")),),
        train=TrainConfig(steps=epochs_to_steps(epochs, 128), log_every=log_every, eval_every=every,
                          sample_every=every, checkpoint_every=every, keep_checkpoints=3, num_samples=num_samples),
    )


def tiny_text(config: ExperimentConfig, **model_changes) -> ExperimentConfig:
    """A few-step, 2-layer version of a GPT experiment for the CPU test suite."""
    changes = dict(context=16, layers=2, heads=2, width=16, sample_tokens=8)
    changes.update(model_changes)
    return tiny(config, batch_size=8, eval_batch_size=16, **changes)


def gan_experiment(name: str, model, *, steps: int, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                   n_critic: int = 1, batch_size: int = 64, every: int = 1000, dataset: str = "mnist",
                   num_samples: int = 100) -> ExperimentConfig:
    """A two-player GAN experiment: discriminator (``n_critic`` updates per step, each on its own micro-batch)
    then generator, both Adam with a constant learning rate; continuous pixel intensities (no binarization)."""
    from aigc_jax.core.config import DataConfig, OptimConfig, PlayerConfig

    optim = OptimConfig(name="adam", lr=lr, schedule="constant", b1=betas[0], b2=betas[1])
    return ExperimentConfig(
        name=name,
        model_name="gan",
        model=model,
        data=DataConfig(name=dataset, batch_size=batch_size, eval_batch_size=500, binarize="none"),
        players=(PlayerConfig(name="discriminator", optim=optim, updates_per_step=n_critic),
                 PlayerConfig(name="generator", optim=optim)),
        train=TrainConfig(steps=steps, log_every=100, eval_every=every, sample_every=every, checkpoint_every=every,
                          keep_checkpoints=2, num_eval_batches=2, num_samples=num_samples),
    )


def diffusion_experiment(name: str, model_name: str, model, *, steps: int, lr: float = 5e-4, batch_size: int = 128,
                         warmup_steps: int = 200, every: int = 1000, dataset: str = "mnist",
                         num_samples: int = 100, autoencoder_lr: float = 0.0) -> ExperimentConfig:
    """A diffusion/flow experiment: the ``denoiser`` player with Adam, a linear warm-up and cosine decay to 0,
    global-norm clipping at 1, continuous pixel intensities; the model keeps its own moving average for sampling.
    ``autoencoder_lr > 0``: a latent model's ``autoencoder`` player first, with the same schedule at that rate."""
    from aigc_jax.core.config import DataConfig, OptimConfig, PlayerConfig

    optim = OptimConfig(name="adam", lr=lr, schedule="cosine", warmup_steps=warmup_steps, clip_norm=1.0)
    players = (PlayerConfig(name="denoiser", optim=optim),)
    if autoencoder_lr > 0:
        players = (PlayerConfig(name="autoencoder", optim=dataclasses.replace(optim, lr=autoencoder_lr)), *players)
    return ExperimentConfig(
        name=name,
        model_name=model_name,
        model=model,
        data=DataConfig(name=dataset, batch_size=batch_size, eval_batch_size=500, binarize="none"),
        players=players,
        train=TrainConfig(steps=steps, log_every=100, eval_every=every, sample_every=every, checkpoint_every=every,
                          keep_checkpoints=2, num_eval_batches=4, num_samples=num_samples),
    )


def tiny_diffusion(config: ExperimentConfig, **model_changes) -> ExperimentConfig:
    """The few-step version of a diffusion experiment: an 8-channel U-Net of one level (attention at 14x14 with
    2x2 patches; the levels' down- and up-sampling are tested in tests/test_diffusion.py), 4 sampler steps."""
    changes = dict(channels=8, channel_mults=(1,), num_res_blocks=1, attention_resolutions=(14,),
                   sample_steps=4, ema_decay=0.9)
    return tiny(config, **{**changes, **model_changes})
