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
