"""Class-conditional DDPM on MNIST with classifier-free guidance (Ho & Salimans 2022): the ddpm-mnist model with a
label embedding, 10% label dropout, guided DDIM sampling (default w = 2).

    aigc-jax train cddpm-mnist
    aigc-jax sample runs/cddpm-mnist --label 3 --out threes.png
"""

from ._common import diffusion_experiment, tiny_diffusion, variant
from .ddpm_mnist import model


def base():
    return diffusion_experiment("cddpm-mnist", "ddpm", model(num_classes=10, label_dropout=0.1, guidance=2.0),
                                steps=1800, lr=1e-3, every=600)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny_diffusion(base(), timesteps=20)})
