"""``aelab models``: the registered architectures."""

from __future__ import annotations

import typer

from aelab.cli._common import echo


def models_cmd() -> None:
    """List registered models with their input shape, latent size and parameter count."""
    from aelab.models import create_model, describe_model, list_models

    for name in list_models():
        m = create_model(name)
        c = m.config
        n = sum(p.numel() for p in m.parameters())
        echo(
            f"{name:16s} {c.in_channels}x{c.image_size}x{c.image_size}  latent {c.latent_dim:5d}  {n / 1e6:7.2f} M  {describe_model(name)}"
        )


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
