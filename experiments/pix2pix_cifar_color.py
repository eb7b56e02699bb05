"""pix2pix (Isola et al. 2017) colourising CIFAR-10: the input is the BT.601 luminance of a 32x32 image, the target
the colour image, on the embedded 4,000-image CIFAR-10 subset (Krizhevsky 2009). U-Net generator (encoder
32-64-128, bottleneck at 4x4, dropout 0.5 on the innermost decoder stage), PatchGAN discriminator (34x34 receptive
field), non-saturating loss + 100 * L1, Adam(2e-4, beta1 0.5), batch 64.

A few minutes on a 2-core CPU; the reference is the grayscale input itself (test_l1_gray).

    aigc-jax train pix2pix-cifar-color
    aigc-jax eval runs/pix2pix-cifar-color                # test_l1 and test_l1_gray on the 1,000 test images
    aigc-jax sample runs/pix2pix-cifar-color --num 24 --out color.png  # test inputs | outputs | targets
    aigc-jax sample runs/pix2pix-cifar-color --input photo.jpg --out color.png
"""

import dataclasses

from aigc_jax.models.gan import Pix2PixConfig

from ._common import gan_experiment, tiny, variant


def base():
    model = Pix2PixConfig(image_shape=(32, 32, 3), task="colorize", g_channels=(32, 64, 128),
                          d_channels=(32, 64, 128), dropout=0.5, dropout_layers=1, l1_weight=100.0)
    cfg = gan_experiment("pix2pix-cifar-color", model, steps=800, every=400, dataset="cifar10-subset",
                         num_samples=48)
    return dataclasses.replace(cfg, model_name="pix2pix")


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), g_channels=(4, 8, 8), d_channels=(4, 8))})
