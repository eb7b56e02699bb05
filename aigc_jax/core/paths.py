"""Parameter paths: the names `--freeze`, `--lora` and `--init-from` match ("PLAYER/key/key/...")."""

from __future__ import annotations

import jax


def key_name(k) -> str:
    """One pytree key as text: a dict key, a sequence index or an attribute name."""
    return str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))


def param_path(player: str, path) -> str:
    """A parameter's name: the player, then its pytree keys, joined by "/" (e.g. ``gpt/blocks/0/wq``)."""
    return "/".join([player, *(key_name(k) for k in path)])


def param_paths(tree: dict) -> dict[str, object]:
    """``{player: pytree}`` -> ``{"player/keys": leaf}``, in pytree order."""
    return {param_path(name, path): leaf for name, sub in tree.items()
            for path, leaf in jax.tree_util.tree_flatten_with_path(sub)[0]}
