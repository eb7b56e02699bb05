"""Class-conditional flow matching on MNIST with classifier-free guidance (Ho & Salimans 2022): the flow-mnist
model with a label embedding added to the time embedding, the label replaced by a null class on 10% of training
examples, and guided sampling ``uncond + w (cond - uncond)`` (default w = 2).

    aigc-jax train cflow-mnist
    aigc-jax sample runs/cflow-mnist --label 7 --guidance 3 --out sevens.png
    aigc-jax eval runs/cflow-mnist --guidance 2          # adds label_accuracy (lenet-mnist)
"""

from ._common import diffusion_experiment, tiny_diffusion, variant
from .flow_mnist import model


def base():
    return diffusion_experiment("cflow-mnist", "flow", model(num_classes=10, label_dropout=0.1, guidance=2.0),
                                steps=1800, lr=1e-3, every=600)


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny_diffusion(base())})
