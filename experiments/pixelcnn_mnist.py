"""Gated PixelCNN (van den Oord et al. 2016) on dynamically binarized MNIST, Bernoulli pixels.

8 gated layers of 32 channels, kernel 3 (vertical 2x3, horizontal 1x2), a 128-channel output head; Adam 1e-3
with cosine decay, batch 64, 1900 steps (about 2 epochs; sized for a 2-core CPU). Reports the exact test NLL in
nats and bits/dim (the anchor for a PixelCNN on binarized MNIST is 81.30 nats).

    aigc-jax train pixelcnn-mnist
    aigc-jax eval runs/pixelcnn-mnist
"""

import dataclasses

from aigc_jax.models.autoregressive import PixelCNNConfig

from ._common import mnist_experiment, tiny, variant


def base():
    model = PixelCNNConfig(layers=8, channels=32, kernel=3, head_channels=128)
    cfg = mnist_experiment("pixelcnn-mnist", "pixelcnn", model, epochs=2, player="pixelcnn", log_every=50,
                           num_samples=16)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, batch_size=64, eval_batch_size=500),
        train=dataclasses.replace(cfg.train, steps=1900, eval_every=950, sample_every=1900, checkpoint_every=950),
    )


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), layers=2, channels=4, head_channels=8)})
