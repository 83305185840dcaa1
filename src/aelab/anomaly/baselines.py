"""Baseline detectors that train no network, for comparison with :class:`ReconstructionDetector`.

Both take feature rows (flattened pixels, or an autoencoder's codes) and
follow the detector vocabulary of the package: ``fit`` on normal rows,
``decision_function`` higher for more anomalous rows.

- :class:`PCAReconstruction`: squared error of the reconstruction from the
  top principal components, the linear autoencoder. The number of components
  is chosen without anomalies: the one whose probabilistic PCA model (Tipping
  & Bishop, 1999) gives held-out normal rows the highest likelihood.
- :class:`KNNDistance`: mean Euclidean distance to the ``k`` nearest normal
  rows (on pixels, the "pixel kNN" of the one-class literature).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aelab.anomaly.scores import knn_distance

__all__ = ["KNNDistance", "PCAReconstruction", "flatten_images"]

#: Component counts :class:`PCAReconstruction` chooses from by default.
PCA_CANDIDATES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def flatten_images(images: Any) -> np.ndarray:
    """uint8 images of shape (n_samples, C, H, W) (array or tensor) -> float32 (n_samples, C*H*W) in [0, 1]."""
    a = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    if a.ndim < 2:
        raise ValueError(f"images: expected at least 2 axes (n_samples, ...), got shape {a.shape}")
    return a.reshape(len(a), -1).astype(np.float32) / 255.0


def _check_rows(X: Any, what: str) -> np.ndarray:
    a = np.asarray(X, dtype=np.float64)
    if a.ndim != 2 or len(a) == 0:
        raise ValueError(
            f"{what}: expected a 2-D array (n_samples, n_features), got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return a


class PCAReconstruction:
    """Reconstruction error from the top principal components of the normal rows.

    Parameters
    ----------
    n_components : int or "auto", default="auto"
        Components kept; ``"auto"`` picks, among ``candidates``, the count
        whose probabilistic PCA gives the held-out normal rows the highest
        mean log-likelihood (no anomaly is needed).
    candidates : sequence of int, default=PCA_CANDIDATES
    holdout_fraction : float, default=0.1
        Share of the normal rows held out to choose ``n_components``; the
        model is then fitted on the others.
    random_state : int, default=0

    Attributes
    ----------
    n_components_ : int
    log_likelihood_ : dict of int to float
        Held-out mean log-likelihood of each candidate (empty for a fixed count).
    axes_ : ndarray of shape (n_axes, n_features)
        Principal axes, strongest first: those of the largest candidate with
        ``"auto"``, else ``n_components_`` of them.
    """

    def __init__(
        self,
        n_components: int | str = "auto",
        *,
        candidates: Sequence[int] = PCA_CANDIDATES,
        holdout_fraction: float = 0.1,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.candidates = candidates
        self.holdout_fraction = holdout_fraction
        self.random_state = random_state

    def fit(self, X: Any) -> PCAReconstruction:
        """Fit on normal rows ``X`` of shape (n_samples, n_features); returns self."""
        a = _check_rows(X, "normal rows")
        if not 0.0 < self.holdout_fraction < 0.9:
            raise ValueError(f"holdout_fraction must be in (0, 0.9), got {self.holdout_fraction}")
        if self.n_components != "auto" and (
            isinstance(self.n_components, bool) or not isinstance(self.n_components, int)
            or self.n_components < 1
        ):  # fmt: skip
            raise ValueError(
                f"n_components must be a positive integer or 'auto', got {self.n_components!r}"
            )
        perm = np.random.default_rng(self.random_state).permutation(len(a))
        n_held = max(1, int(round(self.holdout_fraction * len(a))))
        if len(a) - n_held < 2:
            raise ValueError(f"need at least {n_held + 2} normal rows, got {len(a)}")
        held, train = a[perm[:n_held]], a[perm[n_held:]]
        cands = sorted(c for c in self.candidates if 1 <= c < min(train.shape))
        self.log_likelihood_: dict[int, float] = {}
        if self.n_components == "auto":
            cands = cands or [1]
            self.mean_, self.axes_, self.variances_ = _pca(train, max(cands))
            self.log_likelihood_ = {
                c: _ppca_loglik(self, held, c, a.shape[1]) for c in cands if c <= len(self.axes_)
            }
            self.n_components_ = max(self.log_likelihood_, key=self.log_likelihood_.get)
        else:
            k = max(1, min(int(self.n_components), min(train.shape) - 1))
            self.mean_, self.axes_, self.variances_ = _pca(train, k)
            self.n_components_ = min(k, len(self.axes_))
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Mean squared reconstruction error of each row: ndarray of shape (n_samples,)."""
        return self.errors_by_count(X)[self.n_components_]

    def errors_by_count(self, X: Any) -> dict[int, np.ndarray]:
        """Reconstruction error of each row with 1, 2, ... ``len(axes_)`` components.

        Returns
        -------
        dict of int to ndarray of shape (n_samples,)
            Keyed by the component count; ``[n_components_]`` is :meth:`decision_function`.
        """
        if not hasattr(self, "axes_"):
            raise ValueError("this PCAReconstruction is not fitted yet; call fit(normal_rows)")
        a = _check_rows(X, "rows")
        if a.shape[1] != self.axes_.shape[1]:
            raise ValueError(f"rows have {a.shape[1]} features, the model {self.axes_.shape[1]}")
        xc = a - self.mean_
        left = (xc**2).sum(1) - np.cumsum((xc @ self.axes_.T) ** 2, axis=1).T  # (n_axes, n)
        return {i + 1: np.maximum(r, 0.0) / a.shape[1] for i, r in enumerate(left)}


def _pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, top-``k`` principal axes (k, d) and every variance (all eigenvalues, descending)."""
    mean = x.mean(0)
    xc = x - mean
    n, d = xc.shape
    if n < d:
        # The Gram matrix is the smaller eigenproblem when rows are fewer than features.
        w, v = np.linalg.eigh(xc @ xc.T)
        w, v = np.clip(w[::-1], 0, None), v[:, ::-1]
        k = min(k, int((w > 1e-10 * max(w[0], 1e-30)).sum()) or 1)
        axes = (xc.T @ v[:, :k] / np.sqrt(np.maximum(w[:k], 1e-30))).T
    else:
        w, v = np.linalg.eigh(xc.T @ xc)
        w, v = np.clip(w[::-1], 0, None), v[:, ::-1]
        axes = v[:, :k].T
    return mean, axes, w / max(n - 1, 1)


def _ppca_loglik(model: PCAReconstruction, held: np.ndarray, k: int, d: int) -> float:
    """Mean log-likelihood (up to a constant) of ``held`` under PPCA with ``k`` components."""
    lam = np.maximum(model.variances_[:k], 1e-12)
    noise = max((model.variances_.sum() - lam.sum()) / max(d - k, 1), 1e-12)
    xc = held - model.mean_
    p2 = (xc @ model.axes_[:k].T) ** 2
    q = (p2 / lam).sum(1) + ((xc**2).sum(1) - p2.sum(1)) / noise
    return float(np.mean(-0.5 * (np.log(lam).sum() + (d - k) * np.log(noise) + q)))


class KNNDistance:
    """Mean Euclidean distance to the ``k`` nearest normal rows.

    Parameters
    ----------
    k : int, default=5
    """

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def fit(self, X: Any) -> KNNDistance:
        """Keep the normal rows ``X`` of shape (n_samples, n_features); returns self."""
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        self.bank_ = _check_rows(X, "normal rows").astype(np.float32)
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Distance score of each row: ndarray of shape (n_samples,)."""
        if not hasattr(self, "bank_"):
            raise ValueError("this KNNDistance is not fitted yet; call fit(normal_rows)")
        rows = _check_rows(X, "rows").astype(np.float32)
        return knn_distance(rows, self.bank_, self.k)
