"""Flow matching on CIFAR-10 at 32x32 for an accelerator (Lipman et al. 2023, with logit-normal times, Esser et
al. 2024): the ddpm-cifar10 U-Net (base width 128, multipliers 1, 2, 2, 2, attention at 16x16), the velocity
target, Adam 2e-4 with 5,000 warm-up steps, batch 128, weight average 0.9999, 400,000 steps, sampled with Heun
in 50 steps (99 network evaluations). The embedded CIFAR-10 subset by default, ``--set data.name=tfds:cifar10``
for the full set.

    aigc-jax train flow-cifar10 --set data.name=tfds:cifar10
"""

from aigc_jax.models.diffusion import FlowConfig

from ._common import diffusion_experiment, tiny_diffusion, variant


def model(**changes):
    base = dict(image_shape=(32, 32, 3), channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                attention_resolutions=(16,), patch_size=1, dropout=0.1, ema_decay=0.9999, sample_steps=50,
                sampler="heun")
    return FlowConfig(**{**base, **changes})


def base():
    return diffusion_experiment("flow-cifar10", "flow", model(), steps=400_000, lr=2e-4, warmup_steps=5000,
                                every=50_000, dataset="cifar10-subset", num_samples=64)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny_diffusion(base(), channel_mults=(1, 2),
                                                                   attention_resolutions=(16,))})
