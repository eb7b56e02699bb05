"""aigc_jax: generative models as pure functions over plain pytrees, trained by one sharded trainer."""
