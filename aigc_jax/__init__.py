"""aigc_jax: generative models as pure functions over plain pytrees, trained by one sharded trainer.

    import aigc_jax
    gen = aigc_jax.load("runs/vae-mnist")
    images = gen.sample_fn(gen.params, jax.random.key(0), 16)
"""

from aigc_jax.api import LoadedModel as LoadedModel
from aigc_jax.api import create as create
from aigc_jax.api import get_config as get_config
from aigc_jax.api import list_models as list_models
from aigc_jax.api import load as load
from aigc_jax.core.errors import UserError as UserError

__version__ = "0.1.0"
