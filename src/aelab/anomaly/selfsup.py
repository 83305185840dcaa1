"""Rotation prediction on top of the autoencoder, for the ``"rotation"`` anomaly score.

The idea is GEOM's (Golan & El-Yaniv, "Deep Anomaly Detection Using Geometric
Transformations", NeurIPS 2018), with four rotations instead of 72
transformations: a network that has learned to tell which way up a normal
image was turned is unsure about images of another kind. Here the classifier
head of the autoencoder learns it from the latent code, while the decoder
keeps reconstructing the upright images, so the reconstruction scores stay
those of a plain autoencoder.

A step sees each batch twice in one encoder pass: upright (reconstructed) and
with a random quarter turn per image (classified).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Quarter turns the head tells apart: 0, 90, 180 and 270 degrees.
N_ROTATIONS = 4


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Turn a batch (B, C, H, W) of square images by ``k`` quarter turns counter-clockwise."""
    return torch.rot90(x, k, dims=(2, 3))


def rotate_each(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Turn image ``i`` of ``x`` (B, C, H, W) by ``ks[i]`` quarter turns; same shape."""
    out = torch.empty_like(x)
    for k in range(N_ROTATIONS):
        rows = (ks == k).nonzero(as_tuple=True)[0]
        if len(rows):
            out[rows] = rotate(x[rows], k)
    return out


def rotation_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Head outputs for each rotation of ``x``: (N_ROTATIONS, B, N_ROTATIONS)."""
    b = x.shape[0]
    turned = torch.cat([rotate(x, k) for k in range(N_ROTATIONS)])  # (4B, C, H, W)
    return model.classify(model.encode(turned)).float().reshape(N_ROTATIONS, b, -1)


def rotation_reconstruction_step(
    *, rotation_weight: float, loss: str = "mse"
) -> Callable[[nn.Module, Any, str], dict[str, Any]]:
    """A training step: reconstruct the upright batch and classify a turned copy.

    Loss: ``reconstruction(decode(encode(x)), x) + rotation_weight * CE(head(encode(turn(x))), turn)``.
    In validation the turns are fixed (image ``i`` turned ``i % 4`` times), so
    the validation loss is comparable between epochs.
    """
    from aelab.training import reconstruction_loss

    def step(model: nn.Module, batch: Any, stage: str) -> dict[str, Any]:
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        b = x.shape[0]
        if stage == "train":
            ks = torch.randint(0, N_ROTATIONS, (b,), device=x.device)
        else:
            ks = torch.arange(b, device=x.device) % N_ROTATIONS
        z = model.encode(torch.cat([x, rotate_each(x, ks)]))  # (2B, latent)
        rec = reconstruction_loss(model.decode(z[:b]), x, loss)
        logits = model.classify(z[b:]).float()
        ce = F.cross_entropy(logits, ks)
        return {
            "loss": rec + rotation_weight * ce,
            "n": b,
            "recon": rec.detach(),
            "rotation_ce": ce.detach(),
            "rotation_acc": (logits.detach().argmax(1) == ks).float().mean(),
        }

    return step
