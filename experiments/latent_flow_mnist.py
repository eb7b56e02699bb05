"""Flow matching in the latent space of an autoencoder trained beside it, on MNIST (latent diffusion, Rombach et
al. 2022, with the flow objective of Lipman et al. 2023 and logit-normal times, Esser et al. 2024): an MLP
autoencoder (784-1024-512-32, KL weight 0.01) and a residual-MLP velocity field (width 512, 4 blocks, 4.8M
parameters) on its 32-dimensional latent, trained together in one run for 20,000 steps at batch 128, sampled
with the weight average (0.999) and Heun's method in 50 steps.

The flow's network costs a few MFLOP per example, so on a 2-core CPU it takes many more steps in
30 minutes than the pixel-space U-Net of ``flow-mnist`` (measurements in benchmarks/README.md).

    aigc-jax train latent-flow-mnist
    aigc-jax sample runs/latent-flow-mnist --num 64 --out latent-flow.png
    aigc-jax eval runs/latent-flow-mnist                 # lenet-mnist FID, KID, IS, precision/recall
"""

from aigc_jax.models.diffusion import LatentFlowConfig

from ._common import diffusion_experiment, tiny, variant


def base():
    model = LatentFlowConfig(image_shape=(28, 28, 1), latent_dim=32, encoder_hidden=(1024, 512), kl_weight=0.01,
                             width=512, depth=4, dropout=0.0, ema_decay=0.999, sample_steps=50, sampler="heun")
    return diffusion_experiment("latent-flow-mnist", "latent-flow", model, steps=20_000, lr=1e-3,
                                autoencoder_lr=2e-3, warmup_steps=500, every=5000)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), latent_dim=4, encoder_hidden=(16,), width=16,
                                                         depth=1, sample_steps=4, ema_decay=0.9)})
