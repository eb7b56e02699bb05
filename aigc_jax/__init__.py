"""aigc_jax: generative models as pure functions over plain pytrees, trained by one sharded trainer.

    import aigc_jax
    aigc_jax.train("vae-mnist", "runs/vae", overrides=["train.steps=200"])
    images = aigc_jax.sample("runs/vae", 16, seed=0)          # [16, 28, 28, 1] in [0, 1]
    metrics = aigc_jax.evaluate("runs/vae")                    # the metrics the model declares
    gen = aigc_jax.load("runs/vae")                            # plain-pytree params and pure functions
    same = gen.sample_fn(gen.params, jax.random.key(0), 16)   # == images
"""

# The subpackage aigc_jax.train is imported before the function of that name is bound: Python binds a subpackage
# to its parent's attribute when it is first imported, which would otherwise replace aigc_jax.train (the function).
from aigc_jax import train as _train_package  # noqa: F401, I001
from aigc_jax import zoo as _zoo  # noqa: F401  (the composition root: registers the families and experiments)
from aigc_jax.api import LoadedModel as LoadedModel
from aigc_jax.api import create as create
from aigc_jax.api import evaluate as evaluate
from aigc_jax.api import get_config as get_config
from aigc_jax.api import list_models as list_models
from aigc_jax.api import load as load
from aigc_jax.api import read_tokenizer as read_tokenizer
from aigc_jax.api import sample as sample
from aigc_jax.api import sample_text as sample_text
from aigc_jax.api import train as train
from aigc_jax.api import translate_images as translate_images
from aigc_jax.core.errors import UserError as UserError

__version__ = "0.1.0"

__all__ = [
    "LoadedModel",
    "UserError",
    "create",
    "evaluate",
    "get_config",
    "list_models",
    "load",
    "read_tokenizer",
    "sample",
    "sample_text",
    "train",
    "translate_images",
]
