"""A registry of model constructors, in the style of timm's ``register_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn as nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its own name; ``fn(**overrides)`` must build the model."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"a model named {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_MODELS)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    **overrides
        Config fields to change from the variant's defaults, e.g.
        ``in_channels=1, image_size=32``.

    Returns
    -------
    torch.nn.Module
    """
    try:
        fn = _MODELS[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        ) from None
    return fn(**overrides)


def auto_model_spec(channels: int, height: int, width: int) -> tuple[str, dict[str, Any]]:
    """A registered model and overrides that suit images of the given shape.

    The ``convae`` family works at power-of-two sizes; images are brought to
    the next power of two at or above their longer side, capped at 64 (the
    study's size: a larger input multiplies the size of the latent layer by
    four per doubling) and at least 16. Gray 28x28 images (Fashion-MNIST)
    therefore get ``convae_fmnist`` (1x32x32) and RGB 64x64 images ``convae``.

    Returns
    -------
    name : str
    overrides : dict
        Keyword arguments for :func:`create_model`.
    """
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    side = max(16, min(64, 1 << (max(height, width) - 1).bit_length()))
    if channels == 1 and side == 32:
        return "convae_fmnist", {}
    if channels == 3 and side == 64:
        return "convae", {}
    return "convae", {"in_channels": channels, "image_size": side}


def describe_model(name: str) -> str:
    """First line of a registered model's docstring."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return ((_MODELS[name].__doc__ or "").strip().splitlines() or [""])[0]
