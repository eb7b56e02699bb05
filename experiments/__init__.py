"""Experiment configs: one file per experiment, each with ``get_config(name="")`` (``name``: "" or a variant).

The file ``vae_mnist.py`` is the experiment ``vae-mnist``. Every file also provides the ``tiny`` variant that the
conformance tests train for a few steps.
"""
