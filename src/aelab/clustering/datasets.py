"""The synthetic sets of the Equilibrium K-Means paper, regenerated from its description.

Yudong He, "Imbalanced Data Clustering using Equilibrium K-Means", arXiv
2402.14490 (2024). Data-A and Data-B follow the paper's text exactly; for
Data-C and Data-D the paper gives only the shapes and sizes, and the
placements below are aelab's reading of its figures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["make_paper_data", "make_imbalanced_blobs", "PAPER_DATASETS"]

PAPER_DATASETS: tuple[str, ...] = ("A", "B", "C", "D")
_CENTRES_AB = np.array([[-2.0, 2.0], [2.0, -2.0], [4.0, 4.0]])
_SIZES_AB = (2000, 50, 200)


def _rng(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**31 - 1))
    return np.random.default_rng(random_state)


def make_paper_data(
    name: str, *, random_state: Any = None, standardize: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one of the paper's four imbalanced 2-d sets.

    - ``"A"``: 2000, 50 and 200 points from N(mu, I) at (-2, 2), (2, -2), (4, 4).
    - ``"B"``: the same sizes, uniform in squares of side 3.5 at the same centres.
    - ``"C"``: a Gaussian ball of 5000 points (N(0, I)) and a "stick" of 200
      points (x ~ N(3.5, 0.1^2), y uniform in [-2.5, 2.5]) beside it.
    - ``"D"``: a uniform square of 5000 points on [0, 10]^2 and eight Gaussian
      blobs of 50 points (std 0.5) around it, at the corners and edge midpoints
      of the square [-3, 13]^2.

    Parameters
    ----------
    name : {"A", "B", "C", "D"}
    random_state : int, Generator, RandomState or None
    standardize : bool, default=False
        z-score each feature (the paper's protocol).

    Returns
    -------
    X : ndarray of shape (n_samples, 2), float64
    y : ndarray of shape (n_samples,), int64
        Group index (0 is the large group).
    """
    key = str(name).upper().removeprefix("DATA-")
    if key not in PAPER_DATASETS:
        raise ValueError(
            f"unknown paper data set {name!r}; choose one of {', '.join(PAPER_DATASETS)}"
        )
    rng = _rng(random_state)
    parts: list[np.ndarray] = []
    if key == "A":
        parts = [
            rng.normal(c, 1.0, size=(n, 2)) for c, n in zip(_CENTRES_AB, _SIZES_AB, strict=True)
        ]
    elif key == "B":
        parts = [
            rng.uniform(c - 1.75, c + 1.75, size=(n, 2))
            for c, n in zip(_CENTRES_AB, _SIZES_AB, strict=True)
        ]
    elif key == "C":
        stick = np.column_stack([rng.normal(3.5, 0.1, 200), rng.uniform(-2.5, 2.5, 200)])
        parts = [rng.normal(0.0, 1.0, size=(5000, 2)), stick]
    else:
        ring = [(-3, -3), (5, -3), (13, -3), (13, 5), (13, 13), (5, 13), (-3, 13), (-3, 5)]
        parts = [rng.uniform(0.0, 10.0, size=(5000, 2))] + [
            rng.normal(c, 0.5, size=(50, 2)) for c in ring
        ]
    X = np.vstack(parts)
    y = np.repeat(np.arange(len(parts)), [len(p) for p in parts]).astype(np.int64)
    if standardize:
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y


def make_imbalanced_blobs(
    sizes: tuple[int, ...] = (2000, 100, 100),
    *,
    n_features: int = 2,
    spacing: float = 4.0,
    std: float = 1.0,
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs of unequal sizes whose centres are ``spacing`` apart pairwise.

    The centres are the vertices of a regular simplex (scaled so every pair is
    ``spacing`` apart), so the only imbalance is in the sizes.

    Returns
    -------
    X : ndarray of shape (sum(sizes), max(n_features, len(sizes) - 1)), float64
    y : ndarray of shape (sum(sizes),), int64
    """
    k = len(sizes)
    if k < 1 or min(sizes) < 1:
        raise ValueError(f"sizes={sizes!r} must be a non-empty tuple of positive counts")
    dim = max(n_features, k - 1)
    eye = np.eye(k)
    simplex = eye - eye.mean(
        axis=0
    )  # k points in a (k-1)-dim affine subspace, pairwise sqrt(2) apart
    basis = np.linalg.svd(simplex, full_matrices=False)[2][: k - 1]  # (k-1, k)
    centres = np.zeros((k, dim))
    centres[:, : k - 1] = simplex @ basis.T * (spacing / np.sqrt(2.0))
    rng = _rng(random_state)
    X = np.vstack([rng.normal(c, std, size=(n, dim)) for c, n in zip(centres, sizes, strict=True)])
    y = np.repeat(np.arange(k), sizes).astype(np.int64)
    return X, y
