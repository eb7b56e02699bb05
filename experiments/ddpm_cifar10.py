"""DDPM on CIFAR-10 at 32x32 for an accelerator (Ho et al. 2020, appendix B): the paper's 35.7M-parameter U-Net
(base width 128, channel multipliers 1, 2, 2, 2, two residual blocks per level, self-attention at 16x16, dropout
0.1), T = 1000 linear betas, the eps target, Adam 2e-4 with 5,000 warm-up steps, batch 128, weight average
0.9999, 800,000 steps. Reads the embedded 4,000-image CIFAR-10 subset by default; the full set with
``--set data.name=tfds:cifar10``.

    aigc-jax train ddpm-cifar10 --set data.name=tfds:cifar10
    aigc-jax eval runs/ddpm-cifar10 --steps 100 --extractor inception-v3
"""

import dataclasses

from aigc_jax.models.diffusion import DDPMConfig

from ._common import diffusion_experiment, tiny_diffusion, variant


def model(**changes):
    base = dict(image_shape=(32, 32, 3), channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                attention_resolutions=(16,), patch_size=1, dropout=0.1, ema_decay=0.9999, sample_steps=100,
                sampler="ddim", timesteps=1000, schedule="linear", target="eps")
    return DDPMConfig(**{**base, **changes})


def base():
    cfg = diffusion_experiment("ddpm-cifar10", "ddpm", model(), steps=800_000, lr=2e-4, warmup_steps=5000,
                               every=50_000, dataset="cifar10-subset", num_samples=64)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, keep_checkpoints=3))


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny_diffusion(base(), timesteps=20, channel_mults=(1, 2),
                                                                   attention_resolutions=(16,))})
