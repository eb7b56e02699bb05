"""Gated PixelCNN (van den Oord et al. 2016) on dynamically binarized MNIST, Bernoulli pixels.

8 gated layers of 64 channels, kernel 5, Adam 1e-3 with cosine decay, batch 64. Reports test NLL in nats
(anchor: 81.30 nats, van den Oord et al. 2016a, table 2 for PixelCNN on binarized MNIST) and bits/dim.

    aigc-jax train pixelcnn-mnist
    aigc-jax eval runs/pixelcnn-mnist          # exact NLL (no latent variables)
"""

from aigc_jax.models.autoregressive import PixelCNNConfig
from experiments._common import mnist_experiment, tiny, variant


def base():
    model = PixelCNNConfig(layers=8, channels=64, kernel=5, head_channels=256)
    cfg = mnist_experiment("pixelcnn-mnist", "pixelcnn", model, epochs=2, player="pixelcnn", every_epochs=1,
                           log_every=50, num_samples=16)
    import dataclasses

    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=64, eval_batch_size=500),
                               train=dataclasses.replace(cfg.train, steps=2 * (60_000 // 64),
                                                         eval_every=60_000 // 64, sample_every=60_000 // 64,
                                                         checkpoint_every=60_000 // 64))


def get_config(name: str = ""):
    return variant(name, {"": base, "tiny": lambda: tiny(base(), layers=2, channels=4, head_channels=8)})
