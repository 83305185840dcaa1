"""What the Equilibrium K-Means estimators need to know about X before iterating.

Private: the estimators (and :func:`aelab.clustering.auto_alpha`) validate and
call these. numpy only, so that the automatic alpha can be computed without
loading scikit-learn.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np

from aelab.clustering._ekm_kernels import _chunk_rows, _row_sq_norms


def _random_state(seed: Any) -> np.random.RandomState:
    """``check_random_state`` that also accepts a ``numpy.random.Generator``.

    A Generator's bit generator is shared, so drawing here advances it.
    """
    if isinstance(seed, np.random.Generator):
        return np.random.RandomState(seed.bit_generator)
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, Integral):
        return np.random.RandomState(int(seed))
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(
        f"random_state={seed!r} cannot seed a generator; pass an int, a RandomState, a Generator or None"
    )


def _check_finite(X: np.ndarray, name: str = "X") -> None:
    """Raise a ValueError counting NaN and inf values; checks in row chunks (no N x D temporary)."""
    step = max(1, (1 << 22) // max(1, X.shape[1]))
    if all(np.isfinite(X[s : s + step]).all() for s in range(0, X.shape[0], step)):
        return
    n_nan = n_inf = bad_rows = 0
    for s in range(0, X.shape[0], step):
        blk = X[s : s + step]
        n_nan += int(np.isnan(blk).sum())
        n_inf += int(np.isinf(blk).sum())
        bad_rows += int((~np.isfinite(blk)).any(axis=1).sum())
    raise ValueError(
        f"{name} contains {n_nan} NaN and {n_inf} infinite (inf) values in {bad_rows} of "
        f"{X.shape[0]} rows; remove or impute them before clustering"
    )


class _DataStats:
    """What every pass needs about X: its centre, ``||x - shift||^2`` and scales.

    One chunked pass computes ``||x||^2`` and the column sums (and finds NaN or
    inf through the row norms). ``shift`` is the (weighted) mean when the data
    sit far from the origin (``||mean||^2`` larger than the mean squared
    deviation); the kernels then subtract it chunk by chunk, so distances do
    not cancel catastrophically, and a second pass recomputes the norms.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64, C-contiguous
    sample_weight : ndarray of shape (n_samples,), float64, non-negative, or None
    """

    def __init__(self, X: np.ndarray, sample_weight: np.ndarray | None) -> None:
        n, d = X.shape
        step = _chunk_rows(d, X.itemsize)
        x_sq = np.empty(n, dtype=X.dtype)
        colsum = np.zeros(d)
        wcolsum = np.zeros(d) if sample_weight is not None else colsum
        for s in range(0, n, step):
            blk = X[s : s + step]
            x_sq[s : s + step] = np.einsum("ij,ij->i", blk, blk)
            colsum += blk.sum(axis=0, dtype=np.float64)
            if sample_weight is not None:
                wcolsum += sample_weight[s : s + step] @ blk
        if not np.isfinite(x_sq).all():
            _check_finite(X)  # raises with the counts when there are NaN or inf values
            raise ValueError(
                f"X has values too large to square in {X.dtype} (max |x| = {float(np.abs(X).max()):.3g}); "
                f"rescale the features"
            )
        total_w = float(n) if sample_weight is None else float(sample_weight.sum())
        mean = wcolsum / total_w
        sq_total = float(x_sq.sum(dtype=np.float64))
        w_sq_total = sq_total if sample_weight is None else float(sample_weight @ x_sq)
        self.total_weight = total_w
        #: (Weighted) mean squared distance to the (weighted) mean.
        self.mean_sq_dev = max(0.0, w_sq_total / total_w - float(mean @ mean))
        umean = colsum / n
        # scikit-learn's tolerance scale: the mean variance of the features (unweighted).
        self.mean_var = max(0.0, sq_total / n - float(umean @ umean)) / d
        self.shift: np.ndarray | None = None
        self.x_sq = x_sq
        if float(mean @ mean) > self.mean_sq_dev:
            # Far from the origin: work relative to the mean, and redo the
            # statistics there (the differences above lost precision).
            self.shift = mean.astype(X.dtype)
            self.x_sq = _row_sq_norms(X, self.shift)
            sq_dev = float(self.x_sq.sum(dtype=np.float64))
            self.mean_sq_dev = (
                sq_dev if sample_weight is None else float(sample_weight @ self.x_sq)
            ) / total_w
            self.mean_var = sq_dev / (n * d)
