"""DDPM on MNIST (Ho et al. 2020): T = 1000, linear betas 1e-4..0.02, the eps target, the flow-mnist U-Net (1M
parameters on 2x2 patches), a weight average (0.999) sampled with DDIM (eta 0) in 50 steps; ``--sampler ddpm
--steps 1000`` runs the full ancestral chain. `aigc-jax eval --metrics nll` reports the variational bound in
bits/dim (eq. 5; T network calls per test image, so give it ``--num-samples``).

    aigc-jax train ddpm-mnist
    aigc-jax eval runs/ddpm-mnist --metrics nll --num-samples 200
"""

from aigc_jax.models.diffusion import DDPMConfig

from ._common import diffusion_experiment, tiny_diffusion, variant


def model(**changes):
    base = dict(image_shape=(28, 28, 1), channels=32, channel_mults=(1, 2), num_res_blocks=2,
                attention_resolutions=(7,), patch_size=2, dropout=0.1, ema_decay=0.999, sample_steps=50,
                sampler="ddim", timesteps=1000, schedule="linear", target="eps")
    return DDPMConfig(**{**base, **changes})


def base():
    return diffusion_experiment("ddpm-mnist", "ddpm", model(), steps=1800, lr=1e-3, every=600)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny_diffusion(base(), timesteps=20)})
