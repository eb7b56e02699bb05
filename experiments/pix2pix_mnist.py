"""pix2pix (Isola et al. 2017) for 4x super-resolution of MNIST: the input is the 28x28 digit averaged over 4x4 blocks
(7x7, shown repeated 4x), the target the original. U-Net generator (encoder 32-64, bottleneck at 7x7, dropout 0.5
on the innermost decoder stage), PatchGAN discriminator on (input, output) pairs with a 34x34 receptive field,
non-saturating loss + 100 * L1, Adam(2e-4, beta1 0.5), batch 64.

Sized for a 2-core CPU (see the README for the wall time); the number to beat is bicubic upsampling of the 7x7 input.

    aigc-jax train pix2pix-mnist
    aigc-jax eval runs/pix2pix-mnist                      # test_l1 (the generator) and test_l1_bicubic, 10k images
    aigc-jax sample runs/pix2pix-mnist --num 24 --out sr.png           # test inputs | outputs | targets
    aigc-jax sample runs/pix2pix-mnist --input digit7x7.png --out sr.png  # your own 7x7 (or 28x28) image
"""

import dataclasses

from aigc_jax.models.gan import Pix2PixConfig

from ._common import gan_experiment, tiny, variant


def base():
    model = Pix2PixConfig(image_shape=(28, 28, 1), task="upsample4", g_channels=(32, 64), d_channels=(32, 64, 128),
                          dropout=0.5, dropout_layers=1, l1_weight=100.0)
    cfg = gan_experiment("pix2pix-mnist", model, steps=1500, every=500, num_samples=48)
    return dataclasses.replace(cfg, model_name="pix2pix")


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(4, 8), d_channels=(4, 8))})
