"""Shared layers (attention, conv blocks, norms, masked convs) for the model families."""
