"""The clustering loss of deep clustering, and the training step that adds it to reconstruction.

The clustering term, per latent ``z`` (in the clustering space, with
``d_k = ||z - c_k||^2`` divided by the mean squared distance ``s`` of the
round's latents to their mean, so that ``gamma`` does not depend on the
latent scale):

- ``method="ekm"``: the EKM objective ``J = sum_k U_k d_k`` with
  ``U = softmax(-alpha s d)``. Its gradient is ``sum_k w_k grad d_k`` with the
  equilibrium weights ``w_k = U_k (1 - alpha s (d_k - J))`` (the paper's
  Eq. 38): each latent is pulled towards its centroids by the EKM weights,
  and pushed away from the others where a weight is negative, which is the
  repulsion that keeps small clusters apart (Yudong He, arXiv 2402.14490).
- ``method="kmeans"``: ``min_k d_k``, the pull towards the nearest centroid
  (the hard assignment).

Both weights are computed from the current latents of the batch, so the
step is the exact gradient of the objective the clustering minimises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from aelab.clustering.space import FeatureSpace
from aelab.training.steps import RECON_LOSSES, Augment, reconstruction_loss, unpack_batch

__all__ = ["METHODS", "clustering_loss", "deep_clustering_step"]

METHODS: tuple[str, ...] = ("ekm", "kmeans")


def clustering_loss(
    z: torch.Tensor,
    centroids: torch.Tensor,
    *,
    method: str,
    alpha: float,
    scale: float = 1.0,
) -> torch.Tensor:
    """Mean clustering loss of a batch of latents against fixed centroids.

    Parameters
    ----------
    z : torch.Tensor of shape (B, D)
        Latents in the clustering space.
    centroids : torch.Tensor of shape (K, D)
    method : {"ekm", "kmeans"}
        ``"ekm"``: the EKM objective ``sum_k softmax(-alpha d)_k d_k``, whose
        gradient weights the pull to each centroid by the equilibrium weights;
        ``"kmeans"``: ``min_k d_k``.
    alpha : float
        EKM inverse temperature, in units of the raw squared distances
        (ignored by ``"kmeans"``).
    scale : float
        Squared distances are divided by this (the loss is then dimensionless).

    Returns
    -------
    torch.Tensor
        A scalar (float32).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if z.ndim != 2 or centroids.ndim != 2 or z.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"z (B, D) and centroids (K, D) must share D, got {tuple(z.shape)} and {tuple(centroids.shape)}"
        )
    if not scale > 0 or not alpha > 0:
        raise ValueError(f"scale and alpha must be > 0, got scale={scale}, alpha={alpha}")
    return _clustering_loss(z, centroids, method, float(alpha), float(scale))


def _clustering_loss(
    z: torch.Tensor, c: torch.Tensor, method: str, alpha: float, scale: float
) -> torch.Tensor:
    with torch.autocast(z.device.type, enabled=False):
        z, c = z.float(), c.float()
        # (B, D), (K, D) -> (B, K); direct differences are exact and K is small.
        d = (z[:, None, :] - c[None, :, :]).square().sum(-1) / scale
        if method == "kmeans":
            return d.min(dim=1).values.mean()
        # softmax shifts by the row maximum: no underflow at any alpha (EKM trap 1).
        u = torch.softmax(-(alpha * scale) * d, dim=1)
        return (u * d).sum(1).mean()


def deep_clustering_step(
    space: FeatureSpace,
    centroids: np.ndarray,
    *,
    method: str,
    alpha: float,
    scale: float,
    gamma: float,
    loss: str = "mse",
    augment: Augment | None = None,
) -> Callable[[nn.Module, Any, str], dict[str, Any]]:
    """A step for :class:`~aelab.training.Trainer`: reconstruction + gamma * clustering loss.

    Parameters
    ----------
    space : FeatureSpace
        Map from latents to the clustering space (differentiable).
    centroids : ndarray of shape (n_clusters, n_space_features)
        Fixed for the step's lifetime (one round).
    method : {"ekm", "kmeans"}
    alpha : float
        EKM alpha in the clustering space's units.
    scale : float
        Squared distances are divided by it (see :func:`clustering_loss`).
    gamma : float
        Weight of the clustering term; 0 is plain reconstruction.
    loss : {"mse", "l1", "bce"}
        Reconstruction loss.
    augment : callable, optional
        Training-stage batch augmentation.

    Returns
    -------
    callable
        ``step(model, batch, stage)`` returning ``loss``, ``recon``, ``cluster`` and ``n``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if loss not in RECON_LOSSES:
        raise ValueError(
            f"unknown reconstruction loss {loss!r}; use one of {', '.join(RECON_LOSSES)}"
        )
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    c_np = np.asarray(centroids, dtype=np.float32)
    cache: dict[torch.device, torch.Tensor] = {}

    def step(model: nn.Module, batch: Any, stage: str) -> dict[str, Any]:
        x, _, _ = unpack_batch(batch)
        if stage == "train" and augment is not None:
            x = augment(x).clamp(0, 1)
        z = model.encode(x)
        rec = reconstruction_loss(model.decode(z), x, loss)
        if z.device not in cache:
            cache[z.device] = torch.from_numpy(c_np).to(z.device)
        clu = _clustering_loss(
            space.transform_torch(z.float()), cache[z.device], method, alpha, scale
        )
        return {
            "loss": rec + gamma * clu,
            "recon": rec.detach(),
            "cluster": clu.detach(),
            "n": x.shape[0],
        }

    return step
