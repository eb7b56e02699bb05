"""Model families; importing this package registers every one of them."""

from aigc_jax.models import autoregressive as autoregressive  # noqa: F401
from aigc_jax.models import diffusion as diffusion  # noqa: F401
from aigc_jax.models import gan as gan  # noqa: F401
from aigc_jax.models import vae as vae  # noqa: F401
