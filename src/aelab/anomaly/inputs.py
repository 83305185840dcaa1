"""What a detector is given: its input images, and the model that suits them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.data.dataset import ImageDataset

#: Encoder widths of the detector's own model (``model="auto"``) by image side,
#: with a code of :data:`AUTO_LATENT_DIM`. At 32x32 a quarter of the study's
#: widths; at 64x64 one more, halved block, so that a training step costs about
#: as much as at 32x32 (1.6 times) (measured on one CPU core).
AUTO_WIDTHS: dict[int, tuple[int, ...]] = {
    16: (32, 64, 128),
    32: (32, 64, 128),
    64: (16, 32, 64, 128),
}
AUTO_LATENT_DIM = 64


def anomaly_model_spec(channels: int, height: int, width: int) -> tuple[str, dict[str, Any]]:
    """The registered model and overrides that ``model="auto"`` trains on images of this shape.

    The member of the ``convae`` family that :func:`aelab.models.auto_model_spec`
    picks for the shape (``convae_fmnist`` for gray 28x28, ``convae`` for RGB
    64x64), narrowed to :data:`AUTO_WIDTHS` with a code of :data:`AUTO_LATENT_DIM`.
    """
    from aelab.models import auto_model_spec

    name, overrides = auto_model_spec(channels, height, width)
    side = int(overrides.get("image_size", 32 if name == "convae_fmnist" else 64))
    return name, {**overrides, "widths": AUTO_WIDTHS[side], "latent_dim": AUTO_LATENT_DIM}


def as_dataset(X: Any, what: str) -> ImageDataset:
    """ImageDataset, a data spec (path or ``fashion-mnist``), or an array of images."""
    if isinstance(X, ImageDataset):
        ds = X
    elif isinstance(X, str | Path):
        from aelab.data import load_dataset

        ds = load_dataset(X, progress=False)
    elif isinstance(X, np.ndarray | torch.Tensor):
        from aelab.data import from_array

        ds = from_array(X)
    else:
        raise ValueError(
            f"{what}: expected an aelab ImageDataset, a data spec (folder, .npy/.npz, "
            f"fashion-mnist[:split]) or an array of images, got {type(X).__name__}"
        )
    if len(ds) == 0:
        raise ValueError(f"{what}: no images; give at least one")
    return ds
