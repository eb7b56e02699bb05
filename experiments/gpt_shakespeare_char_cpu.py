"""Character-level GPT on Tiny Shakespeare, the CPU configuration from the nanoGPT README.

4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations; AdamW lr 1e-3 (100 warm-up steps, cosine
decay to 1e-4 at 2000), beta2 0.99, weight decay 0.1, gradient clip 1.0, no dropout, no biases. nanoGPT reports
a validation loss of 1.88 for it.

    aigc-jax train gpt-shakespeare-char-cpu
    aigc-jax sample runs/gpt-shakespeare-char-cpu --prompt "ROMEO:" --tokens 300
"""

from aigc_jax.core.config import DataConfig, ExperimentConfig, OptimConfig, PlayerConfig, TrainConfig
from aigc_jax.models.autoregressive import GPTConfig

from ._common import tiny_text, variant

NANOGPT_OPTIM = OptimConfig(name="adamw", lr=1e-3, schedule="cosine", warmup_steps=100, final_lr=1e-4, b1=0.9,
                            b2=0.99, weight_decay=0.1, clip_norm=1.0)


def base() -> ExperimentConfig:
    return ExperimentConfig(
        name="gpt-shakespeare-char-cpu",
        model_name="gpt",
        model=GPTConfig(vocab_size=65, context=64, layers=4, heads=4, width=128, dropout=0.0, bias=False),
        data=DataConfig(name="shakespeare", tokenizer="char", batch_size=12, eval_batch_size=96),
        players=(PlayerConfig(name="gpt", optim=NANOGPT_OPTIM),),
        train=TrainConfig(steps=2000, log_every=100, eval_every=500, sample_every=1000, checkpoint_every=1000,
                          num_samples=2),
    )


def get_config(name: str = "") -> ExperimentConfig:
    return variant(name, {"": base, "tiny": lambda: tiny_text(base())})
