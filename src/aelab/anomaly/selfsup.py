"""Geometric-transform prediction on top of the autoencoder, for the ``"transform"`` score.

The idea is GEOM's (Golan & El-Yaniv, "Deep Anomaly Detection Using Geometric
Transformations", NeurIPS 2018): a network that has learned to tell which of a
set of geometric transformations was applied to a normal image is unsure
about images of another kind. GEOM trains a separate wide ResNet on 72
transformations; here the classifier head of the autoencoder learns a smaller
set from the latent code, while the decoder keeps reconstructing the upright
images, so the reconstruction scores stay those of a plain autoencoder.

A transformation is a horizontal shift and/or vertical shift by a fixed step
(an eighth of the image side, with reflection at the border), then an
optional horizontal flip, then ``k`` quarter turns. The named sets are in
:data:`TRANSFORM_SETS`.

A training step sees each batch twice in one encoder pass: as it is
(reconstructed) and with a random transformation per image (classified).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

#: Quarter turns: 0, 90, 180 and 270 degrees.
N_ROTATIONS = 4


class Transform(NamedTuple):
    """``turns`` quarter turns after an optional horizontal ``flip``, after a shift by (dy, dx) steps."""

    turns: int = 0
    flip: bool = False
    dy: int = 0
    dx: int = 0


_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))

#: Named transformation sets, each beginning with the identity.
TRANSFORM_SETS: dict[str, tuple[Transform, ...]] = {
    "rotations": tuple(Transform(k) for k in range(N_ROTATIONS)),
    "rotations+flips": tuple(Transform(k, f) for f in (False, True) for k in range(N_ROTATIONS)),
    "rotations+shifts": tuple(
        Transform(k, False, dy, dx) for dy, dx in _SHIFTS for k in range(N_ROTATIONS)
    ),
}


def check_transforms(name: str) -> tuple[Transform, ...]:
    """The transformations of a named set; ValueError naming the choices otherwise."""
    if name not in TRANSFORM_SETS:
        raise ValueError(f"unknown transforms {name!r}; choose one of: {', '.join(TRANSFORM_SETS)}")
    return TRANSFORM_SETS[name]


def rotate(x: torch.Tensor, k: int) -> torch.Tensor:
    """Turn a batch (B, C, H, W) of square images by ``k`` quarter turns counter-clockwise."""
    return torch.rot90(x, k, dims=(2, 3))


def apply_transform(x: torch.Tensor, t: Transform) -> torch.Tensor:
    """Apply ``t`` to a batch (B, C, H, W) of square images; same shape.

    A shift moves the content by ``H // 8`` pixels per step, filling the
    border by reflection (GEOM's choice), so no blank band gives it away.
    """
    if t.dy or t.dx:
        h, w = x.shape[2:]
        s = max(1, h // 8)
        padded = F.pad(x, (s, s, s, s), mode="reflect")
        top, left = s - t.dy * s, s - t.dx * s
        x = padded[:, :, top : top + h, left : left + w]
    if t.flip:
        x = torch.flip(x, dims=(3,))
    return rotate(x, t.turns) if t.turns else x


def apply_each(x: torch.Tensor, ids: torch.Tensor, ts: tuple[Transform, ...]) -> torch.Tensor:
    """Apply ``ts[ids[i]]`` to image ``i`` of ``x`` (B, C, H, W); same shape."""
    out = torch.empty_like(x)
    for i, t in enumerate(ts):
        rows = (ids == i).nonzero(as_tuple=True)[0]
        if len(rows):
            out[rows] = apply_transform(x[rows], t)
    return out


def rotate_each(x: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Turn image ``i`` of ``x`` (B, C, H, W) by ``ks[i]`` quarter turns; same shape."""
    return apply_each(x, ks, TRANSFORM_SETS["rotations"])


def transform_logits(
    model: nn.Module, x: torch.Tensor, ts: tuple[Transform, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and head outputs of every transformed copy of ``x``.

    Returns
    -------
    z : torch.Tensor of shape (T, B, latent_dim)
        ``z[t, i]``: the code of image ``i`` under ``ts[t]``.
    logits : torch.Tensor of shape (T, B, T)
    """
    b = x.shape[0]
    z = model.encode(torch.cat([apply_transform(x, t) for t in ts]))  # (T*B, latent)
    logits = model.classify(z).float()
    return z.reshape(len(ts), b, -1), logits.reshape(len(ts), b, -1)


def transform_reconstruction_step(
    transforms: tuple[Transform, ...], *, weight: float, loss: str = "mse"
) -> Callable[[nn.Module, Any, str], dict[str, Any]]:
    """A training step: reconstruct the batch as it is and classify a transformed copy.

    Loss: ``reconstruction(decode(encode(x)), x) + weight * CE(head(encode(t(x))), t)``
    with ``t`` drawn per image from ``transforms``. In validation image ``i``
    gets ``transforms[i % T]``, so the validation loss is comparable between epochs.
    """
    from aelab.training import reconstruction_loss

    n_t = len(transforms)

    def step(model: nn.Module, batch: Any, stage: str) -> dict[str, Any]:
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        b = x.shape[0]
        if stage == "train":
            ids = torch.randint(0, n_t, (b,), device=x.device)
        else:
            ids = torch.arange(b, device=x.device) % n_t
        z = model.encode(torch.cat([x, apply_each(x, ids, transforms)]))  # (2B, latent)
        rec = reconstruction_loss(model.decode(z[:b]), x, loss)
        logits = model.classify(z[b:]).float()
        ce = F.cross_entropy(logits, ids)
        return {
            "loss": rec + weight * ce,
            "n": b,
            "recon": rec.detach(),
            "transform_ce": ce.detach(),
            "transform_acc": (logits.detach().argmax(1) == ids).float().mean(),
        }

    return step
