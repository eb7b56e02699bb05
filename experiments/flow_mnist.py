"""Flow matching / rectified flow on MNIST (Lipman et al. 2023; Liu et al. 2023; logit-normal times, Esser et al.
2024): velocity target ``eps - x0`` on the straight path ``x_t = (1 - t) x0 + t eps``, a 1M-parameter U-Net on
2x2 patches (14x14 maps of 32 and 64 channels, attention at 7x7), a weight average (0.999) for sampling with
Euler's method in 50 steps.

Sized for 30 minutes of training on a 2-core CPU (under a second a step at batch 128; measurements in
benchmarks/README.md).

    aigc-jax train flow-mnist
    aigc-jax sample runs/flow-mnist --steps 50 --sampler heun --num 64 --out flow.png
    aigc-jax eval runs/flow-mnist --steps 20          # lenet-mnist FID, KID, IS, precision/recall
"""

from aigc_jax.models.diffusion import FlowConfig

from ._common import diffusion_experiment, tiny_diffusion, variant


def model(**changes):
    base = dict(image_shape=(28, 28, 1), channels=32, channel_mults=(1, 2), num_res_blocks=2,
                attention_resolutions=(7,), patch_size=2, dropout=0.1, ema_decay=0.999, sample_steps=50,
                sampler="euler")
    return FlowConfig(**{**base, **changes})


def base():
    return diffusion_experiment("flow-mnist", "flow", model(), steps=1800, lr=1e-3, every=600)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny_diffusion(base())})
