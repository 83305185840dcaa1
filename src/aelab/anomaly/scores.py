"""Per-image anomaly scores from images and their reconstructions.

Every score is "higher means more anomalous". The pixel scores compare an image
with its reconstruction; the latent score compares its code with the codes of
the normal training images.
"""

from __future__ import annotations

import numpy as np
import torch

#: Score names accepted by :class:`aelab.anomaly.ReconstructionDetector`.
SCORES: tuple[str, ...] = ("mse", "mae", "ssim", "latent")

#: Window of the SSIM score; odd, and small enough for 16x16 images.
SSIM_WINDOW = 7


def check_score(name: str) -> str:
    """Validate a score name and return it."""
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of: {', '.join(SCORES)}")
    return name


def error_maps(x: torch.Tensor, recon: torch.Tensor, score: str = "mse") -> torch.Tensor:
    """Per-pixel anomaly maps, averaged over channels.

    Parameters
    ----------
    x, recon : torch.Tensor of shape (B, C, H, W)
        Images and reconstructions in [0, 1].
    score : {"mse", "mae", "ssim"}
        Squared error, absolute error, or ``1 - SSIM`` computed in a local window.

    Returns
    -------
    torch.Tensor of shape (B, H, W)
    """
    if score == "mae":
        m = (x - recon).abs()
    elif score == "ssim":
        import kornia

        m = 1.0 - kornia.metrics.ssim(x, recon, SSIM_WINDOW)
    else:  # mse, and the pixel part of every other score
        m = (x - recon).square()
    return m.mean(dim=1)


def pixel_scores(x: torch.Tensor, recon: torch.Tensor, score: str) -> torch.Tensor:
    """Per-image score: the mean of :func:`error_maps`, shape (B,)."""
    return error_maps(x, recon, score).flatten(1).mean(dim=1)


def knn_distance(
    z: np.ndarray, bank: np.ndarray, k: int, *, exclude_self: bool = False
) -> np.ndarray:
    """Mean Euclidean distance from each row of ``z`` to its ``k`` nearest rows of ``bank``.

    Parameters
    ----------
    z : ndarray of shape (n_samples, latent_dim)
    bank : ndarray of shape (n_bank, latent_dim)
        Latent codes of normal images.
    k : int
        Neighbours to average; clipped to the bank size.
    exclude_self : bool
        When ``z`` is the bank itself, skip each point's zero distance to itself.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    from sklearn.neighbors import NearestNeighbors

    k_eff = min(k + int(exclude_self), len(bank))
    nn_ = NearestNeighbors(n_neighbors=k_eff).fit(bank)
    dist, _ = nn_.kneighbors(z)
    if exclude_self:
        dist = dist[:, 1:]
    return dist.mean(axis=1)
