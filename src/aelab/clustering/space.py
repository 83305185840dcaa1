"""The space latent vectors are clustered in: as they are, on the unit sphere, or PCA-reduced.

Why this matters: the ``convae`` latent is 1024-d, post-ReLU and batch-normed,
so its coordinates are non-negative, many are zero, and the norm of a vector
carries image contrast more than image content. Squared Euclidean distances
in that space are dominated by the norm and by the many weak dimensions.

- ``"raw"``: the vectors as they are.
- ``"l2"``: each vector divided by its norm. Squared distances become
  ``2 - 2 cos``, so clusters follow directions (what the image shows) rather
  than magnitudes; distances are bounded, which also keeps EKM's automatic
  alpha stable while an encoder is being fine-tuned.
- ``"pca"``: centred and projected on the leading principal components,
  which drops the weak, noisy dimensions (and makes EKM and t-SNE cheaper).
- ``"l2-pca"``: the unit-sphere vectors, then PCA.

The transform is a fixed function once fitted, with a NumPy and a torch form
(:meth:`FeatureSpace.transform_torch`), so deep clustering can put its loss in
exactly the space the clusters were found in and back-propagate through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SPACES", "FeatureSpace", "fit_feature_space"]

SPACES: tuple[str, ...] = ("raw", "l2", "pca", "l2-pca")
_EPS = 1e-12


def _l2(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), _EPS)


@dataclass
class FeatureSpace:
    """A fitted map from latent vectors to the clustering space.

    Attributes
    ----------
    kind : {"raw", "l2", "pca", "l2-pca"}
    mean : ndarray of shape (n_features,) or None
        PCA centre (for the PCA kinds).
    components : ndarray of shape (n_components, n_features) or None
        PCA axes, rows orthonormal (for the PCA kinds).
    """

    kind: str
    mean: np.ndarray | None = None
    components: np.ndarray | None = None

    @property
    def n_components(self) -> int | None:
        """Output dimension for the PCA kinds, else None (same as the input)."""
        return None if self.components is None else int(self.components.shape[0])

    def transform(self, X: Any) -> np.ndarray:
        """Map vectors into the space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_out), float32 or float64 as X
        """
        x = np.asarray(X)
        if x.ndim != 2:
            raise ValueError(f"X must have shape (n_samples, n_features), got {x.shape}")
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        if self.components is not None and x.shape[1] != self.components.shape[1]:
            raise ValueError(
                f"X has {x.shape[1]} features but the space was fitted on {self.components.shape[1]}"
            )
        if self.kind in ("l2", "l2-pca"):
            x = _l2(x)
        if self.components is not None:
            assert self.mean is not None
            x = (x - self.mean.astype(x.dtype)) @ self.components.T.astype(x.dtype)
        return x

    def transform_torch(self, z: Any) -> Any:
        """The same map on a torch tensor of shape (B, n_features), differentiable."""
        import torch

        if self.kind in ("l2", "l2-pca"):
            z = z / z.norm(dim=1, keepdim=True).clamp_min(_EPS)
        if self.components is not None:
            assert self.mean is not None
            mean = torch.as_tensor(self.mean, dtype=z.dtype, device=z.device)
            comps = torch.as_tensor(self.components, dtype=z.dtype, device=z.device)
            z = (z - mean) @ comps.T  # (B, D) -> (B, n_components)
        return z

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (the PCA arrays are summarised, not stored)."""
        return {"kind": self.kind, "n_components": self.n_components}


def fit_feature_space(
    X: Any, kind: str = "raw", *, n_components: int = 32, random_state: int = 0
) -> FeatureSpace:
    """Fit the map to a clustering space on latent vectors ``X``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    kind : {"raw", "l2", "pca", "l2-pca"}, default="raw"
        See the module docstring.
    n_components : int, default=32
        Output dimension of the PCA kinds; capped at ``min(n_samples, n_features)``.
    random_state : int, default=0
        Seed of the randomised PCA solver (used for large inputs).

    Returns
    -------
    FeatureSpace
    """
    if kind not in SPACES:
        raise ValueError(f"unknown feature space {kind!r}; choose one of {', '.join(SPACES)}")
    x = np.asarray(X)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"X must be a non-empty (n_samples, n_features) array, got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError("X contains NaN or infinite values")
    if kind in ("raw", "l2"):
        return FeatureSpace(kind)
    if int(n_components) < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    from sklearn.decomposition import PCA

    x = x.astype(np.float64)
    if kind == "l2-pca":
        x = _l2(x)
    k = min(int(n_components), x.shape[0], x.shape[1])
    pca = PCA(n_components=k, random_state=random_state).fit(x)
    return FeatureSpace(kind, mean=pca.mean_.copy(), components=pca.components_.copy())
