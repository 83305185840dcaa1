"""The passes of a trained detector model over images: scores, codes, reconstructions.

Each function is one batched pass through :func:`aelab.training.map_batches`
and trusts its arguments (the detector has checked them): the model is the
detector's trained autoencoder, ``images`` are already at its shape.
"""

from __future__ import annotations

import numpy as np
import torch

from aelab.anomaly.scores import PIXEL_SCORES, error_maps, pixel_scores, transform_scores
from aelab.anomaly.selfsup import TRANSFORM_SETS, transform_logits


def forward_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    names: tuple[str, ...],
    *,
    transforms: str,
    batch_size: int,
    device: str,
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """One pass: every score of ``names`` but ``"latent"``, and the codes when it is named.

    Parameters
    ----------
    model : torch.nn.Module
        The detector's autoencoder (with a transformation head when ``"transform"`` is named).
    images : Tensor of shape (n_samples, C, H, W)
    names : tuple of str
        Score parts (see :data:`aelab.anomaly.SCORES`).
    transforms : str
        The key of :data:`~aelab.anomaly.selfsup.TRANSFORM_SETS` the head was trained on.

    Returns
    -------
    scores : dict of str to ndarray of shape (n_samples,), float64
    codes : ndarray of shape (n_samples, latent_dim), float32, or None
        When ``"latent"`` is named (its distances need a bank of codes).
    """
    from aelab.training import map_batches

    pixel = [p for p in names if p in PIXEL_SCORES]
    latent, transform = "latent" in names, "transform" in names
    ts = TRANSFORM_SETS[transforms]

    def fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if transform:
            # Every set begins with the identity, whose code is the image's own.
            zt, logits = transform_logits(m, x, ts)
            z = zt[0]
        else:
            z = m.encode(x)
        cols = []
        if pixel:
            r = m.decode(z)
            cols.append(torch.stack([pixel_scores(x, r, p) for p in pixel], dim=1))
        if transform:
            cols.append(transform_scores(logits)[:, None])
        if latent:
            cols.append(z)
        # (B, len(pixel) + transform + latent_dim * latent)
        return torch.cat([c.float() for c in cols], dim=1)

    out = map_batches(model, images, fn, batch_size=batch_size, device=device).numpy()
    order = [*pixel, *(["transform"] if transform else [])]
    comps = {p: out[:, i].astype(np.float64) for i, p in enumerate(order)}
    z = out[:, len(order) :].astype(np.float32) if latent else None
    return comps, z


def encode_images(
    model: torch.nn.Module, images: torch.Tensor, *, batch_size: int, device: str
) -> np.ndarray:
    """Codes of ``images`` (n_samples, C, H, W): ndarray of shape (n_samples, latent_dim), float32."""
    from aelab.training import map_batches

    out = map_batches(
        model, images, lambda m, x: m.encode(x).float(), batch_size=batch_size, device=device
    )
    return out.numpy()


def reconstruct_with_maps(
    model: torch.nn.Module, images: torch.Tensor, kind: str, *, batch_size: int, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """Reconstructions (n_samples, C, H, W) and per-pixel ``kind`` error maps (n_samples, H, W)."""
    from aelab.training import map_batches

    def fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        r = m.decode(m.encode(x))
        # (B, C, H, W) + (B, 1, H, W) -> (B, C + 1, H, W)
        return torch.cat([r, error_maps(x, r, kind)[:, None]], dim=1)

    out = map_batches(model, images, fn, batch_size=batch_size, device=device)
    return out[:, :-1].numpy(), out[:, -1].numpy()
