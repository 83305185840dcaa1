"""uint8 images to floats.

The training loop moves uint8 batches to the device (a quarter of the bytes of
float32) and converts them there; batches themselves come from
:func:`aelab.training.batch_factory` (training) and
:func:`aelab.training.map_batches` (inference).
"""

from __future__ import annotations

import torch


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (any shape) to floats in [0, 1], on the same device.

    Raises
    ------
    ValueError
        When ``images`` is not uint8.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {images.dtype}")
    return images.to(dtype).div_(255.0)
