"""GPT-2-small shapes (12 layers, 12 heads, width 768, context 1024, vocab 50304) on synthetic tokens, bf16
compute with float32 master params and per-block rematerialisation: a throughput/MFU configuration.

    aigc-jax train gpt-124m --steps 50 --mesh data=8
"""

from aigc_jax.core.config import DataConfig, ExperimentConfig, OptimConfig, PlayerConfig, TrainConfig
from aigc_jax.models.autoregressive import GPTConfig

from ._common import tiny_text, variant


def base() -> ExperimentConfig:
    return ExperimentConfig(
        name="gpt-124m",
        model_name="gpt",
        model=GPTConfig(vocab_size=50304, context=1024, layers=12, heads=12, width=768, dropout=0.0, bias=False,
                        compute_dtype="bfloat16", remat=True, sample_tokens=32),
        data=DataConfig(name="synthetic", batch_size=8, eval_batch_size=8),
        players=(PlayerConfig(name="gpt", optim=OptimConfig(name="adamw", lr=6e-4, warmup_steps=100,
                                                             final_lr=6e-5, b2=0.95, weight_decay=0.1,
                                                             clip_norm=1.0)),),
        train=TrainConfig(steps=1000, log_every=10, eval_every=0, sample_every=0, checkpoint_every=500,
                          num_eval_batches=2, num_samples=1),
    )


def get_config(name: str = "") -> ExperimentConfig:
    return variant(name, {"": base, "tiny": lambda: tiny_text(base(), vocab_size=256)})
