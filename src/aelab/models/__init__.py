"""Models: a registry and the convolutional autoencoder family."""

from aelab.models import variants as _variants  # noqa: F401  (registers the variants)
from aelab.models.convae import ConvAEConfig, ConvAutoencoder
from aelab.models.registry import (
    auto_model_spec,
    create_model,
    describe_model,
    list_models,
    register_model,
)

__all__ = [
    "ConvAEConfig",
    "ConvAutoencoder",
    "auto_model_spec",
    "create_model",
    "describe_model",
    "list_models",
    "register_model",
]
