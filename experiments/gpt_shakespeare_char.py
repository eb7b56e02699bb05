"""nanoGPT's "baby GPT" on Tiny Shakespeare characters (a GPU configuration; nanoGPT: val loss 1.4697 on an A100).

The CPU experiment scaled up: 6 layers, 6 heads, width 384, context 256, batch 64, dropout 0.2, 5000 iterations;
the same AdamW and schedule as `gpt_shakespeare_char_cpu.py`.

    aigc-jax train gpt-shakespeare-char
"""

import dataclasses

from aigc_jax.core.config import ExperimentConfig

from . import gpt_shakespeare_char_cpu as cpu
from ._common import tiny_text, variant


def base() -> ExperimentConfig:
    small = cpu.base()
    return dataclasses.replace(
        small,
        name="gpt-shakespeare-char",
        model=dataclasses.replace(small.model, context=256, layers=6, heads=6, width=384, dropout=0.2),
        data=dataclasses.replace(small.data, batch_size=64, eval_batch_size=64),
        train=dataclasses.replace(small.train, steps=5000, log_every=100, eval_every=500, sample_every=1000,
                                  checkpoint_every=1000),
    )


def get_config(name: str = "") -> ExperimentConfig:
    return variant(name, {"": base, "tiny": lambda: tiny_text(base())})
