"""nanoGPT's "baby GPT" on Tiny Shakespeare characters (a GPU configuration; nanoGPT: val loss 1.4697 on an A100).

6 layers, 6 heads, width 384, context 256, batch 64, dropout 0.2, 5000 iterations; AdamW as in
`gpt_shakespeare_char_cpu.py`.

    aigc-jax train gpt-shakespeare-char
"""

import dataclasses

from aigc_jax.core.config import DataConfig, ExperimentConfig, PlayerConfig, TrainConfig
from aigc_jax.models.autoregressive import GPTConfig
from experiments._common import tiny_text, variant
from experiments.gpt_shakespeare_char_cpu import NANOGPT_OPTIM


def base() -> ExperimentConfig:
    return ExperimentConfig(
        name="gpt-shakespeare-char",
        model_name="gpt",
        model=GPTConfig(vocab_size=65, context=256, layers=6, heads=6, width=384, dropout=0.2, bias=False),
        data=DataConfig(name="shakespeare", tokenizer="char", batch_size=64, eval_batch_size=64),
        players=(PlayerConfig(name="gpt", optim=dataclasses.replace(NANOGPT_OPTIM, final_lr=1e-4)),),
        train=TrainConfig(steps=5000, log_every=100, eval_every=500, sample_every=1000, checkpoint_every=1000,
                          num_samples=2),
    )


def get_config(name: str = "") -> ExperimentConfig:
    return variant(name, {"": base, "tiny": lambda: tiny_text(base())})
