"""Chunked numerical kernels for Equilibrium K-Means.

Private: every function here trusts its input (C-contiguous float32 or float64
arrays, finite values, matching dtypes); the estimators (``_ekm_base``, ``_ekm``) validate.

Layout. Per row chunk of ``m`` samples the kernels work on ``(n_clusters, m)``
arrays, not ``(m, n_clusters)``: every reduction over the clusters then runs
across ``n_clusters`` contiguous rows (vectorised, one pass) instead of along
rows of length ``n_clusters`` (which numpy does about 30 times slower for
``n_clusters = 10``). Distances come from one matrix product per chunk,
``-2 C @ X_chunk.T``, with ``||c||^2`` added and ``||x||^2`` left out: the
row-minimum shift cancels it, and only the objective needs it back.

Numerics. With ``d'_kn = d_kn - min_i d_in >= 0`` (exactly 0 at the nearest
centroid) the softmax ``U = exp(-alpha d') / sum_i exp(-alpha d')`` has a
denominator >= 1, so it cannot be 0/0 for any alpha. Where ``alpha * d'``
overflows, ``exp`` gives exactly 0 and the weight is 0; the product
``alpha * d'`` never multiplies a zero ``U`` by infinity because the weights are
formed as ``w = U (1 + alpha J') - (alpha / s) E d'`` with ``J' = sum U d'``
bounded by ``~745 / alpha`` wherever ``U > 0``. float32 data stays float32,
except that an alpha beyond float32's safe range (> 1e30) runs the
``(n_clusters, m)`` part in float64.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
from threadpoolctl import ThreadpoolController

#: Bytes of one row chunk of X the kernels aim for: small enough that the chunk
#: stays in L2 cache between the two matrix products that read it.
_CHUNK_BYTES = 2 << 20
#: Bytes of one ``(n_clusters, chunk)`` work buffer at most (three per thread).
_WORK_BYTES = 2 << 20
#: Above this alpha, float32 cannot hold alpha / s safely; use float64 there.
_FLOAT32_ALPHA_MAX = 1e30


_controller: ThreadpoolController | None = None
_executor: ThreadPoolExecutor | None = None


def _weighted_sum(W: np.ndarray, Xc: np.ndarray) -> np.ndarray:
    """``W @ Xc``: (n_clusters, m) @ (m, n_features) -> (n_clusters, n_features).

    The matrix products of the kernels are plain numpy (OpenBLAS). They used to
    go through torch's GEMM, but importing torch made a process's first fit
    1 to 1.5 s slower, and on the 2-core AMD EPYC we measure on (OpenBLAS runs
    its Haswell kernels there) numpy's products cost no more per pass except
    for float32 with few features: CPU time per pass, numpy over torch, 0.81-0.87
    at 100k x 32 float64, 1.09-1.12 at 100k x 32 float32, 0.87-0.98 at 20k x 1024,
    0.82-0.88 at 100k x 2 and 50k x 128. For float64, OpenBLAS is 1.3 to 1.7
    times faster on ``(Xc.T @ W.T).T`` (the same product with other
    transposition flags) from 128 features up; for float32 ``W @ Xc`` is as
    fast or faster.
    """
    if W.dtype == np.float64:
        return np.matmul(Xc.T, W.T).T
    return np.matmul(W, Xc)


def _n_threads() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread while the kernels run chunks in parallel themselves.

    The matrix products here are skinny (``n_clusters`` rows); multithreaded
    OpenBLAS gains little on them and, on a machine whose cores are busy with
    other work, its spinning threads slow a pass down a hundredfold (measured:
    1.9 s instead of 17 ms for 100k x 32). scikit-learn's KMeans does the same.
    """
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    with _controller.limit(limits=1, user_api="blas"):
        yield


def _for_chunks(
    n: int, chunk: int, make_ws: Callable[[], Any], body: Callable[[int, int, Any], Any]
) -> list[Any]:
    """Run ``body(start, stop, workspace)`` over the row chunks, on up to ``_n_threads()`` threads.

    numpy releases the GIL inside matrix products and ufunc loops, so threads
    over disjoint chunks run in parallel. Results come back in chunk order.
    """
    global _executor
    starts = list(range(0, n, chunk))
    n_workers = min(_n_threads(), len(starts))
    if n_workers <= 1:
        ws = make_ws()
        return [body(s, min(n, s + chunk), ws) for s in starts]
    if _executor is None or _executor._max_workers < n_workers:
        _executor = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="aelab-ekm")

    def worker(t: int) -> list[tuple[int, Any]]:
        ws = make_ws()
        return [
            (i, body(starts[i], min(n, starts[i] + chunk), ws))
            for i in range(t, len(starts), n_workers)
        ]

    out: list[Any] = [None] * len(starts)
    for part in _executor.map(worker, range(n_workers)):
        for i, r in part:
            out[i] = r
    return out


class ChunkStats(NamedTuple):
    """Sufficient statistics of one pass over the data at fixed centroids.

    Attributes
    ----------
    weighted_sum : ndarray of shape (n_clusters, n_features), float64
        ``sum_n s_n w_kn x_n`` (``s`` the sample weights), in the shifted frame.
    weight_total : ndarray of shape (n_clusters,), float64
        ``sum_n s_n w_kn``.
    objective : float
        ``J = sum_n s_n sum_k U_kn d_kn``.
    inertia : float
        ``sum_n s_n min_k d_kn`` (the K-means objective at the same centroids).
    """

    weighted_sum: np.ndarray
    weight_total: np.ndarray
    objective: float
    inertia: float

    def __add__(self, other: ChunkStats) -> ChunkStats:  # type: ignore[override]
        return ChunkStats(
            self.weighted_sum + other.weighted_sum,
            self.weight_total + other.weight_total,
            self.objective + other.objective,
            self.inertia + other.inertia,
        )


def _chunk_rows(n_features: int, itemsize: int, n_clusters: int = 10) -> int:
    """Rows per chunk: about ``_CHUNK_BYTES`` of X and at most ``_WORK_BYTES`` per work buffer.

    Larger chunks mean fewer numpy calls per pass, and with ten clusters that
    overhead, not memory traffic, is what a pass costs (measured at 100k x 32,
    float32: 5.6 ms at 8,192 rows, 4.5 ms at 16,384); the work-buffer bound
    keeps the ``(n_clusters, chunk)`` buffers small when there are many clusters.
    """
    rows = min(
        _CHUNK_BYTES // max(1, n_features * itemsize),
        _WORK_BYTES // max(1, n_clusters * itemsize),
    )
    return int(min(16384, max(256, rows)))


def _work_dtype(dtype: np.dtype, alpha: float) -> np.dtype:
    if dtype == np.float32 and alpha > _FLOAT32_ALPHA_MAX:
        return np.dtype(np.float64)
    return np.dtype(dtype)


class _Workspace:
    """Reusable ``(n_clusters, chunk)`` buffers so a pass allocates nothing per chunk."""

    def __init__(
        self,
        n_clusters: int,
        chunk: int,
        n_features: int,
        dtype: np.dtype,
        wdtype: np.dtype,
        centred: bool,
    ) -> None:
        self.k = n_clusters
        self._a = np.empty(n_clusters * chunk, dtype=wdtype)
        self._e = np.empty(n_clusters * chunk, dtype=wdtype)
        self._v = np.empty(n_clusters * chunk, dtype=wdtype)
        self._g = np.empty(n_clusters * chunk, dtype=dtype) if wdtype != dtype else None
        self._x = np.empty((chunk, n_features), dtype=dtype) if centred else None

    def views(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = self.k
        return (
            self._a[: k * m].reshape(k, m),
            self._e[: k * m].reshape(k, m),
            self._v[: k * m].reshape(k, m),
        )

    def gemm_out(self, m: int) -> np.ndarray:
        if self._g is None:
            return self._a[: self.k * m].reshape(self.k, m)
        return self._g[: self.k * m].reshape(self.k, m)

    def rows(self, X: np.ndarray, start: int, stop: int, shift: np.ndarray | None) -> np.ndarray:
        if shift is None:
            return X[start:stop]
        out = self._x[: stop - start]
        np.subtract(X[start:stop], shift, out=out)
        return out


def _shifted_scores(
    Xc: np.ndarray, neg2c: np.ndarray, c_sq: np.ndarray, ws: _Workspace
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``d' (n_clusters, m)`` and the row minimum ``mn (m,)`` of ``||c||^2 - 2 x.c``.

    ``d'_kn = d_kn - min_i d_in`` and ``min_k d_kn = ||x_n||^2 + mn_n``.
    """
    m = Xc.shape[0]
    A, _, _ = ws.views(m)
    G = ws.gemm_out(m)
    np.matmul(neg2c, Xc.T, out=G)  # (K, D) @ (D, m) -> (K, m)
    if G is not A:
        A[...] = G
    A += c_sq[:, None]
    mn = A.min(axis=0)
    A -= mn
    return A, mn


def _weights_from_shifted(
    A: np.ndarray, alpha: float, ws: _Workspace
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equilibrium weights from shifted distances, in place.

    Parameters
    ----------
    A : ndarray of shape (n_clusters, m)
        Shifted squared distances ``d'``; left unchanged.

    Returns
    -------
    w : ndarray of shape (n_clusters, m)
        ``U (1 - alpha (d' - J'))``, a view of a workspace buffer.
    inv_s : ndarray of shape (m,)
        ``1 / sum_k exp(-alpha d'_k)`` (so ``U = E * inv_s``).
    j_shift : ndarray of shape (m,)
        ``J'_n = sum_k U_kn d'_kn``, the per-sample objective above the minimum.
    """
    m = A.shape[1]
    _, E, V = ws.views(m)
    a = A.dtype.type(alpha)
    np.multiply(A, -a, out=E)
    np.exp(E, out=E)  # E_kn = exp(-alpha d'_kn) in [0, 1], 1 at the nearest centroid
    inv_s = 1.0 / E.sum(axis=0)
    np.multiply(E, A, out=V)
    j_shift = V.sum(axis=0)
    j_shift *= inv_s
    # w = U (1 + alpha J') - alpha U d' = E * f - V * g, with per-sample f and g.
    f = (1.0 + a * j_shift) * inv_s
    g = a * inv_s
    E *= f
    V *= g
    E -= V
    return E, inv_s, j_shift


def _chunk_stats(
    Xc: np.ndarray,
    xsq_c: np.ndarray,
    sw_c: np.ndarray | None,
    neg2c: np.ndarray,
    c_sq: np.ndarray,
    alpha: float,
    ws: _Workspace,
) -> ChunkStats:
    """Sufficient statistics ``(sum s w x, sum s w, J, inertia)`` of one row chunk.

    The Dask path of a later release reuses this function per block.

    Parameters
    ----------
    Xc : ndarray of shape (m, n_features)
    xsq_c : ndarray of shape (m,)
        ``||x_n||^2`` of the rows (in the same shifted frame as ``Xc``).
    sw_c : ndarray of shape (m,) or None
        Sample weights of the rows (None: all 1).
    neg2c : ndarray of shape (n_clusters, n_features)
        ``-2 C``, in the dtype of ``Xc``.
    c_sq : ndarray of shape (n_clusters,)
        ``||c_k||^2``.
    """
    A, mn = _shifted_scores(Xc, neg2c, c_sq, ws)
    W, _, j_shift = _weights_from_shifted(A, alpha, ws)
    dmin = np.maximum(xsq_c + mn, 0.0)  # rounding can make ||x||^2 + mn slightly negative
    if sw_c is not None:
        W *= sw_c.astype(W.dtype, copy=False)
        obj = float(np.dot(sw_c, dmin + j_shift))
        inertia = float(np.dot(sw_c, dmin))
    else:
        obj = float(dmin.sum(dtype=np.float64) + j_shift.sum(dtype=np.float64))
        inertia = float(dmin.sum(dtype=np.float64))
    if W.dtype != Xc.dtype:
        W = W.astype(Xc.dtype)
    S = _weighted_sum(W, Xc)  # (K, m) @ (m, D) -> (K, D)
    # Summing a chunk in its own dtype is pairwise (accurate) and 2x faster than
    # with a float64 accumulator; chunks are then added in float64.
    return ChunkStats(S.astype(np.float64), W.sum(axis=1).astype(np.float64), obj, inertia)


def _prepare(
    C: np.ndarray, dtype: np.dtype, shift: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    Cs = C if shift is None else C - shift
    Cw = np.ascontiguousarray(Cs, dtype=dtype)
    return np.ascontiguousarray(-2.0 * Cw), np.einsum("ij,ij->i", Cw, Cw)


def _row_sq_norms(X: np.ndarray, shift: np.ndarray | None, chunk: int | None = None) -> np.ndarray:
    """``||x_n - shift||^2`` for every row, in chunks; shape (n_samples,), dtype of X."""
    n, d = X.shape
    if shift is None:
        return np.einsum("ij,ij->i", X, X)
    chunk = chunk or _chunk_rows(d, X.itemsize)
    out = np.empty(n, dtype=X.dtype)
    for s in range(0, n, chunk):
        Xc = X[s : s + chunk] - shift
        out[s : s + chunk] = np.einsum("ij,ij->i", Xc, Xc)
    return out


def _sufficient_stats(
    X: np.ndarray,
    C: np.ndarray,
    alpha: float,
    *,
    x_sq: np.ndarray,
    sample_weight: np.ndarray | None = None,
    shift: np.ndarray | None = None,
    chunk: int | None = None,
) -> ChunkStats:
    """One pass over X: the sufficient statistics of the EKM update at centroids C.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64, C-contiguous
    C : ndarray of shape (n_clusters, n_features)
        Centroids in data coordinates (any float dtype).
    alpha : float
        Positive, finite.
    x_sq : ndarray of shape (n_samples,)
        ``||x_n - shift||^2`` (from :func:`_row_sq_norms`).
    sample_weight : ndarray of shape (n_samples,) or None
    shift : ndarray of shape (n_features,) or None
        A point (the data mean) subtracted from X and C on the fly, so that
        ``||x||^2 - 2 x.c + ||c||^2`` does not cancel catastrophically for data far
        from the origin. The returned ``weighted_sum`` is in that shifted frame.
    chunk : int or None
        Rows per chunk (None: about 2 MiB of X per chunk).
    """
    n, d = X.shape
    k = C.shape[0]
    chunk = chunk or _chunk_rows(d, X.itemsize, k)
    wdtype = _work_dtype(X.dtype, alpha)
    neg2c, c_sq = _prepare(C, X.dtype, shift)
    if wdtype != X.dtype:
        c_sq = c_sq.astype(wdtype)

    def make_ws() -> _Workspace:
        return _Workspace(k, min(chunk, n), d, X.dtype, wdtype, shift is not None)

    def body(s: int, e: int, ws: _Workspace) -> ChunkStats:
        sw_c = None if sample_weight is None else sample_weight[s:e]
        return _chunk_stats(ws.rows(X, s, e, shift), x_sq[s:e], sw_c, neg2c, c_sq, alpha, ws)

    parts = _for_chunks(n, chunk, make_ws, body)
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _assign(
    X: np.ndarray,
    C: np.ndarray,
    *,
    shift: np.ndarray | None = None,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and its squared distance for every row.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    dmin : ndarray of shape (n_samples,), dtype of X
    """
    n, d = X.shape
    k = C.shape[0]
    chunk = chunk or _chunk_rows(d, X.itemsize, k)
    neg2c, c_sq = _prepare(C, X.dtype, shift)
    labels = np.empty(n, dtype=np.int64)
    dmin = np.empty(n, dtype=X.dtype)

    def body(s: int, e: int, ws: _Workspace) -> None:
        Xc = ws.rows(X, s, e, shift)
        A, _, _ = ws.views(e - s)
        np.matmul(neg2c, Xc.T, out=A)
        A += c_sq[:, None]
        lab = A.argmin(axis=0)
        labels[s:e] = lab
        xsq = np.einsum("ij,ij->i", Xc, Xc)
        dmin[s:e] = np.maximum(xsq + A[lab, np.arange(e - s)], 0.0)

    _for_chunks(
        n, chunk, lambda: _Workspace(k, min(chunk, n), d, X.dtype, X.dtype, shift is not None), body
    )
    return labels, dmin


def _per_sample(
    X: np.ndarray,
    C: np.ndarray,
    alpha: float,
    what: str,
    *,
    shift: np.ndarray | None = None,
    chunk: int | None = None,
) -> np.ndarray:
    """Per-sample matrices of shape (n_samples, n_clusters), built chunk by chunk.

    ``what``: ``"distances"`` (squared distances d), ``"membership"`` (U),
    ``"weights"`` (w) or ``"objective"`` (J_n, shape (n_samples,)).
    """
    n, d = X.shape
    k = C.shape[0]
    chunk = chunk or _chunk_rows(d, X.itemsize, k)
    wdtype = _work_dtype(X.dtype, alpha)
    neg2c, c_sq = _prepare(C, X.dtype, shift)
    if wdtype != X.dtype:
        c_sq = c_sq.astype(wdtype)
    out = np.empty(n if what == "objective" else (n, k), dtype=X.dtype)

    def body(s: int, e: int, ws: _Workspace) -> None:
        Xc = ws.rows(X, s, e, shift)
        A, mn = _shifted_scores(Xc, neg2c, c_sq, ws)
        if what == "distances":
            dmin = np.maximum(np.einsum("ij,ij->i", Xc, Xc) + mn, 0.0)
            out[s:e] = (A + dmin).T
            return
        W, inv_s, j_shift = _weights_from_shifted(A, alpha, ws)
        if what == "weights":
            out[s:e] = W.T
        elif what == "membership":
            _, E, _ = ws.views(e - s)
            np.multiply(A, -A.dtype.type(alpha), out=E)
            np.exp(E, out=E)
            out[s:e] = (E * inv_s).T
        else:
            dmin = np.maximum(np.einsum("ij,ij->i", Xc, Xc) + mn, 0.0)
            out[s:e] = dmin + j_shift

    _for_chunks(
        n, chunk, lambda: _Workspace(k, min(chunk, n), d, X.dtype, wdtype, shift is not None), body
    )
    return out


def _farthest(
    X: np.ndarray, C: np.ndarray, n_points: int, *, shift: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the ``n_points`` samples farthest from their nearest centroid, farthest first."""
    _, dmin = _assign(X, C, shift=shift)
    n_points = min(n_points, dmin.shape[0])
    idx = np.argpartition(-dmin, n_points - 1)[:n_points]
    return idx[np.argsort(-dmin[idx], kind="stable")]
