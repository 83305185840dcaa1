"""Per-image anomaly scores from images, their reconstructions and their codes.

Every score is "higher means more anomalous". The pixel scores compare an image
with its reconstruction; the latent score compares its code with the codes of
the normal training images, and the pixel score its raw pixels with those of
the normal images (the "pixel kNN" of the one-class literature, which trains
nothing); the transform score measures how unsure the
model's head is about which geometric transformation (quarter turn, shift)
was applied to the image (see :mod:`aelab.anomaly.selfsup`). Several scores combine into one by standardising
each on held-out normal images and adding them (:func:`combine_scores`).

Everything here is a pure function of its arguments; the detector decides
which images go in.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

#: Scores computed from an image and its reconstruction.
PIXEL_SCORES: tuple[str, ...] = ("mse", "mae", "ssim")

#: Score names accepted by :class:`aelab.anomaly.ReconstructionDetector`;
#: join several with ``+`` (e.g. ``"ssim+latent"``) to combine them. ``"pixel"``
#: is the kNN distance in raw pixel space (:func:`pixel_knn_distance`), not a
#: reconstruction score: it reads no model.
SCORES: tuple[str, ...] = (*PIXEL_SCORES, "latent", "pixel", "transform")

#: Former names still accepted: ``"rotation"`` is the transform score of aelab 0.x,
#: when the only transformations were the four quarter turns.
SCORE_ALIASES: dict[str, str] = {"rotation": "transform"}

#: Window of the SSIM score; odd, and small enough for 16x16 images.
SSIM_WINDOW = 7


def check_score(name: str) -> str:
    """Validate a single score name and return it (an alias becomes its current name)."""
    name = SCORE_ALIASES.get(name, name)
    if name not in SCORES:
        raise ValueError(f"unknown score {name!r}; choose one of: {', '.join(SCORES)}")
    return name


def parse_score(spec: str) -> tuple[str, ...]:
    """Split a score spec such as ``"ssim+latent"`` into its validated parts.

    Raises
    ------
    ValueError
        For an unknown or repeated name, or an empty spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"score must be one of {', '.join(SCORES)} or several joined with '+', got {spec!r}"
        )
    parts = tuple(check_score(p.strip().lower()) for p in spec.split("+"))
    if len(set(parts)) != len(parts):
        raise ValueError(f"score {spec!r} names a score twice")
    return parts


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


def flat_pixels(images: torch.Tensor) -> np.ndarray:
    """uint8 images of shape (n_samples, C, H, W) -> uint8 rows of shape (n_samples, C*H*W).

    The pixel score's bank keeps the images at one byte a pixel, four times
    smaller than the floats the distances are computed in.
    """
    return np.ascontiguousarray(images.numpy().reshape(len(images), -1))


def pixel_knn_distance(
    rows: np.ndarray, bank: np.ndarray, k: int, *, exclude_self: bool = False
) -> np.ndarray:
    """Mean Euclidean distance, in pixel values scaled to [0, 1], to the ``k`` nearest bank rows.

    Parameters
    ----------
    rows : ndarray of shape (n_samples, n_pixels), uint8
        Images flattened by :func:`flat_pixels`.
    bank : ndarray of shape (n_bank, n_pixels), uint8
        The normal images, flattened the same way.
    k : int
        Neighbours to average; clipped to the bank size.
    exclude_self : bool
        When ``rows`` is the bank itself: each image is left out of its own
        neighbours (leave-one-out), so that a normal image of the bank scores
        as a new normal image would.

    Returns
    -------
    ndarray of shape (n_samples,), float64
    """
    scale = np.float32(1.0 / 255.0)
    q = rows.astype(np.float32) * scale
    b = q if exclude_self and rows is bank else bank.astype(np.float32) * scale
    return knn_distance(q, b, k, exclude_self=exclude_self).astype(np.float64)


def transform_scores(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the true transformation over the transformed copies of each image.

    Parameters
    ----------
    logits : torch.Tensor of shape (n_transforms, B, n_transforms)
        ``logits[t, i]``: the head's outputs for image ``i`` under transformation ``t``.

    Returns
    -------
    torch.Tensor of shape (B,)
        0 when the head is sure and right about every transformation; higher
        when unsure or wrong.
    """
    t, b, _ = logits.shape
    target = torch.arange(t, device=logits.device).repeat_interleave(b)
    ce = F.cross_entropy(logits.float().reshape(t * b, -1), target, reduction="none")
    return ce.reshape(t, b).mean(dim=0)


def score_stats(components: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each score on normal images, for :func:`combine_scores`.

    Parameters
    ----------
    components : mapping of str to ndarray of shape (n_samples,)
        Scores of held-out normal images, by name.

    Returns
    -------
    dict of str to (mean, std)
        A zero spread is replaced by 1 so that a constant score adds nothing.
    """
    out = {}
    for name, s in components.items():
        s = np.asarray(s, dtype=np.float64)
        std = float(s.std())
        out[name] = (float(s.mean()), std if std > 0 else 1.0)
    return out


def combine_scores(
    components: Mapping[str, np.ndarray], stats: Mapping[str, tuple[float, float]]
) -> np.ndarray:
    """Sum of standardised scores: ``sum_i (s_i - mean_i) / std_i``.

    Standardising on normal images puts scores of different units (squared
    pixel error, latent distance) on one scale, so that each counts as much
    as its spread among normal images, and no anomaly is needed to weigh them.

    Parameters
    ----------
    components : mapping of str to ndarray of shape (n_samples,)
    stats : mapping of str to (mean, std)
        From :func:`score_stats` on held-out normal images; one entry per component.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    total = None
    for name, s in components.items():
        mean, std = stats[name]
        z = (np.asarray(s, dtype=np.float64) - mean) / std
        total = z if total is None else total + z
    if total is None:
        raise ValueError("combine_scores needs at least one score")
    return total
