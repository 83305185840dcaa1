"""Equilibrium K-Means over a ``dask.array``: per-block sufficient statistics, reduced by Dask.

Private: the estimator validates and calls these. Each EKM pass needs only
``(sum_n w_kn x_n, sum_n w_kn, J, inertia)`` at the current centroids, and
these are sums over samples, so every block of rows computes its share with
the in-memory kernel (:func:`_ekm_kernels._sufficient_stats`) and Dask adds
the shares up in a tree. The driver holds the centroids and the iteration
(:func:`_ekm._run_ekm`), never the data; a worker holds one block at a time,
so memory is bounded by the chunk size. With a ``dask.distributed.Client``
active the blocks run on its workers (which must see the same files).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from aelab.clustering._ekm_kernels import (
    ChunkStats,
    _assign,
    _row_sq_norms,
    _single_threaded_blas,
    _sufficient_stats,
)

#: Rows drawn (without replacement) for k-means++ seeding on a Dask array.
_INIT_SAMPLE_PER_CLUSTER = 1000
_INIT_SAMPLE_MIN = 20_000


def is_dask_array(X: Any) -> bool:
    """Whether ``X`` is a ``dask.array.Array`` (without importing Dask when it is not loaded)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


def check_dask_X(X: Any, n_features: int | None = None) -> Any:
    """A 2-D float32/float64 Dask array with one chunk across the features.

    Raises ValueError for other ranks, non-numeric dtypes, or a feature count
    that differs from the fitted one. Finiteness is checked in the first pass.
    """
    if X.ndim != 2:
        raise ValueError(
            f"X must be 2-D (n_samples, n_features), got a dask array of shape {X.shape}"
        )
    if X.dtype.kind not in "fiub":
        raise ValueError(f"X has dtype {X.dtype}; expected numbers")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if any(np.isnan(c) for c in X.chunks[0]) or np.isnan(X.shape[0]):
        raise ValueError(
            "X has unknown chunk sizes; call X.compute_chunk_sizes() (or build it with known "
            "shapes) first"
        )
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"X has {X.shape[1]} features, but the estimator was fitted with {n_features}"
        )
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _aligned_weights(sample_weight: Any, X: Any) -> Any:
    """Sample weights as a (n_samples, 1) float64 Dask array chunked like X's rows."""
    import dask.array as da

    sw = da.asarray(sample_weight).astype(np.float64)
    if sw.shape != (X.shape[0],):
        raise ValueError(f"sample_weight has shape {sw.shape}, expected ({X.shape[0]},)")
    return sw.rechunk((X.chunks[0],))[:, None]


class DaskDataStats:
    """What :class:`_ekm._DataStats` holds, computed by Dask reductions (two passes).

    ``x_sq`` is ``None``: the blocks recompute ``||x - shift||^2`` themselves.
    """

    def __init__(self, X: Any, sample_weight: Any | None) -> None:
        import dask
        import dask.array as da

        n, d = X.shape
        finite = da.isfinite(X).all()
        if sample_weight is None:
            mean, ok = dask.compute(X.mean(axis=0, dtype=np.float64), finite)
            total_w = float(n)
        else:
            total, wx, ok, neg = dask.compute(
                sample_weight.sum(), (sample_weight * X).sum(axis=0, dtype=np.float64), finite,
                (sample_weight < 0).any(),
            )  # fmt: skip
            if neg:
                raise ValueError("sample_weight must be non-negative")
            total_w = float(total)
            mean = np.asarray(wx, dtype=np.float64) / total_w
        if not ok:
            raise ValueError(
                "X contains NaN or infinite values; remove or impute them before clustering"
            )
        shift = np.asarray(mean).astype(X.dtype)
        sq_dev = X.map_blocks(
            lambda b: _row_sq_norms(b, shift)[:, None], dtype=X.dtype, chunks=(X.chunks[0], (1,))
        )[:, 0]
        if sample_weight is None:
            (plain,) = dask.compute(sq_dev.sum(dtype=np.float64))
            wsum = float(plain)
        else:
            plain, weighted = dask.compute(
                sq_dev.sum(dtype=np.float64), (sample_weight[:, 0] * sq_dev).sum()
            )
            wsum = float(weighted)
        self.total_weight = total_w
        self.mean_sq_dev = wsum / total_w
        self.mean_var = (
            float(plain) / (n * d) if sample_weight is not None else self.mean_sq_dev / d
        )
        self.shift: np.ndarray | None = shift if float(mean @ mean) > self.mean_sq_dev else None
        self.x_sq = None


def _block_stats(
    Xb: np.ndarray,
    swb: np.ndarray | None,
    C: np.ndarray,
    alpha: float,
    shift: np.ndarray | None,
) -> np.ndarray:
    """One block's ChunkStats flattened to a (1, K*D + K + 2) float64 row."""
    Xb = np.ascontiguousarray(Xb)
    with _single_threaded_blas():
        st = _sufficient_stats(
            Xb, C, alpha, x_sq=_row_sq_norms(Xb, shift),
            sample_weight=None if swb is None else np.ascontiguousarray(swb[:, 0]), shift=shift,
        )  # fmt: skip
    return np.concatenate([st.weighted_sum.ravel(), st.weight_total, [st.objective, st.inertia]])[
        None, :
    ]


def make_evaluate(X: Any, sample_weight: Any | None, alpha: float, shift: np.ndarray | None) -> Any:
    """``evaluate(C) -> ChunkStats``: one Dask pass over X at centroids C."""
    import dask.array as da

    n_blocks = len(X.chunks[0])

    def evaluate(C: np.ndarray) -> ChunkStats:
        k, d = C.shape
        width = k * d + k + 2
        args = [X] if sample_weight is None else [X, sample_weight]

        def fn(Xb: np.ndarray, swb: np.ndarray | None = None) -> np.ndarray:
            return _block_stats(Xb, swb, C, alpha, shift)

        parts = da.map_blocks(
            fn, *args, dtype=np.float64, chunks=((1,) * n_blocks, (width,)),
        )  # fmt: skip
        flat = np.asarray(parts.sum(axis=0).compute(), dtype=np.float64)
        return ChunkStats(
            flat[: k * d].reshape(k, d),
            flat[k * d : k * d + k].copy(),
            float(flat[-2]),
            float(flat[-1]),
        )

    return evaluate


def make_farthest(X: Any, shift: np.ndarray | None) -> Any:
    """``farthest(C, n_points) -> indices``: samples farthest from their nearest centroid."""
    import dask
    import dask.array as da

    def farthest(C: np.ndarray, n_points: int) -> np.ndarray:
        offsets = np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]])

        def top(Xb: np.ndarray, block_info: dict | None = None) -> np.ndarray:
            _, dmin = _assign(np.ascontiguousarray(Xb), C, shift=shift)
            m = min(n_points, dmin.shape[0])
            idx = np.argpartition(-dmin, m - 1)[:m]
            start = offsets[block_info[0]["chunk-location"][0]] if block_info else 0
            out = np.full((1, 2 * n_points), -1.0)
            out[0, :m] = dmin[idx]
            out[0, n_points : n_points + m] = idx + start
            return out

        cands = da.map_blocks(
            top, X, dtype=np.float64, chunks=((1,) * len(X.chunks[0]), (2 * n_points,))
        )
        (arr,) = dask.compute(cands)
        d, i = arr[:, :n_points].ravel(), arr[:, n_points:].ravel()
        keep = i >= 0
        d, i = d[keep], i[keep].astype(np.int64)
        order = np.argsort(-d, kind="stable")[:n_points]
        return i[order]

    return farthest


def sample_rows(
    X: Any, n_clusters: int, rs: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """A uniform sample of rows for seeding: ``(rows in memory, their indices)``."""
    n = X.shape[0]
    m = min(n, max(_INIT_SAMPLE_MIN, _INIT_SAMPLE_PER_CLUSTER * n_clusters))
    idx = np.sort(rs.choice(n, size=m, replace=False)) if m < n else np.arange(n)
    rows = np.asarray(X[idx].compute() if m < n else X.compute())
    return np.ascontiguousarray(rows), idx


def predict(X: Any, C: np.ndarray, shift: np.ndarray | None) -> Any:
    """Nearest centroid of every row, as a lazy int64 Dask array of shape (n_samples,)."""

    def fn(Xb: np.ndarray) -> np.ndarray:
        with _single_threaded_blas():
            return _assign(np.ascontiguousarray(Xb), C, shift=shift)[0]

    return X.map_blocks(fn, dtype=np.int64, drop_axis=1)
