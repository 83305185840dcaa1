"""Equilibrium K-Means estimators (scikit-learn API).

Implements Yudong He, "Imbalanced Data Clustering using Equilibrium K-Means",
arXiv 2402.14490 (2024). The numerical kernels live in ``_ekm_kernels`` and
import nothing from here.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin, _fit_context
from sklearn.cluster import kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from aelab.clustering import _ekm_dask
from aelab.clustering._ekm_kernels import (
    ChunkStats,
    _assign,
    _chunk_rows,
    _farthest,
    _per_sample,
    _row_sq_norms,
    _single_threaded_blas,
    _sufficient_stats,
)

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _sk_validate_data(est: Any, X: Any, reset: bool = True, **kw: Any) -> np.ndarray:
        return est._validate_data(X, reset=reset, **kw)


__all__ = ["EquilibriumKMeans", "MiniBatchEquilibriumKMeans"]

#: A centroid whose total equilibrium weight is at most this fraction of the
#: total sample weight is "dead": its update S / W would divide by ~0.
_DEAD_FRACTION = 1e-6
#: Anderson acceleration keeps this many past iterates.
_ANDERSON_MEMORY = 5
#: Step of the damped update: c <- c + 0.5 (c_fixed - c).
_DAMPING = 0.5


def _blas1(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a public method with single-threaded BLAS (the kernels thread over chunks)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _single_threaded_blas():
            return method(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- #
# validation helpers


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


def _auto_alpha(mean_sq_dev: float) -> float:
    """The author's default: 2 / mean squared distance to the mean (1 if all points coincide)."""
    return 2.0 / mean_sq_dev if mean_sq_dev > 0 else 1.0


class _DataStats:
    """What every pass needs about X: its centre, ``||x - shift||^2`` and scales.

    One chunked pass computes ``||x||^2`` and the column sums (and finds NaN or
    inf through the row norms). ``shift`` is the (weighted) mean when the data
    sit far from the origin (``||mean||^2`` larger than the mean squared
    deviation); the kernels then subtract it chunk by chunk, so distances do
    not cancel catastrophically, and a second pass recomputes the norms.
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


# --------------------------------------------------------------------------- #
# the fit of one start


class _RunResult:
    __slots__ = ("centers", "stats", "n_iter", "converged", "cycled", "last_shift")

    def __init__(
        self,
        centers: np.ndarray,
        stats: ChunkStats,
        n_iter: int,
        converged: bool,
        cycled: bool,
        last_shift: float,
    ) -> None:
        self.centers = centers
        self.stats = stats
        self.n_iter = n_iter
        self.converged = converged
        self.cycled = cycled
        self.last_shift = last_shift


def _fixed_point(
    stats: ChunkStats, C: np.ndarray, shift: np.ndarray | None, alive: np.ndarray
) -> np.ndarray:
    """``sum_n w_kn x_n / sum_n w_kn`` for live centroids; dead ones stay where they are."""
    T = C.copy()
    T[alive] = stats.weighted_sum[alive] / stats.weight_total[alive, None]
    if shift is not None:
        T[alive] += shift
    return T


def _relocate_dead(
    X: np.ndarray,
    C: np.ndarray,
    stats: ChunkStats,
    data: _DataStats,
    owner: str,
    farthest: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, bool]:
    """Move centroids with vanishing total weight to the farthest samples; warn naming them."""
    dead = np.flatnonzero(stats.weight_total <= _DEAD_FRACTION * data.total_weight)
    if dead.size == 0:
        return C, False
    if farthest is None:
        far = _farthest(X, C, dead.size, shift=data.shift)
    else:
        far = farthest(C, dead.size)
    C = C.copy()
    moves = []
    for k, idx in zip(dead, far, strict=False):
        C[k] = np.asarray(X[idx])
        moves.append(f"centroid {k} (total weight {stats.weight_total[k]:.3g}) -> sample {idx}")
    warnings.warn(
        f"{owner}: {dead.size} centroid(s) had a vanishing total weight and were relocated to the "
        f"farthest sample(s): {'; '.join(moves)}",
        RuntimeWarning,
        stacklevel=4,
    )
    return C, True


def _run_ekm(
    X: np.ndarray,
    C0: np.ndarray,
    alpha: float,
    data: _DataStats,
    sample_weight: np.ndarray | None,
    *,
    update: str,
    acceleration: str | None,
    max_iter: int,
    tol: float,
    verbose: int,
    owner: str,
    evaluate: Callable[[np.ndarray], ChunkStats] | None = None,
    farthest: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> _RunResult:
    """Iterate one start to convergence, a period-2 cycle, or ``max_iter`` passes.

    Each pass over X evaluates the sufficient statistics (and J) at one set of
    centroids; ``n_iter`` counts passes, including rejected extrapolations.
    The returned centroids are always ones at which ``stats`` was evaluated.

    ``update="damped"`` takes half a step towards the fixed point; with
    ``acceleration="anderson"`` it extrapolates from the last few damped steps
    (Anderson type II) and keeps an extrapolation only if J does not rise;
    otherwise it falls back to the plain damped step. ``update="fixed-point"``
    is the paper's rule; when two iterates two steps apart agree (a period-2
    cycle) it stops and keeps the lower-J state of the pair.

    ``evaluate(C)`` and ``farthest(C, n)`` replace the in-memory pass and the
    search for relocation targets (the Dask path passes its own).
    """

    if evaluate is None:

        def evaluate(C: np.ndarray) -> ChunkStats:
            return _sufficient_stats(
                X, C, alpha, x_sq=data.x_sq, sample_weight=sample_weight, shift=data.shift
            )

    eps = float(np.finfo(X.dtype).eps)
    C = np.asarray(C0, dtype=np.float64).copy()
    st = evaluate(C)
    n_iter = 1
    relocations = 0
    hist_g: list[np.ndarray] = []
    hist_f: list[np.ndarray] = []
    prev: tuple[np.ndarray, ChunkStats] | None = None
    shift2 = np.inf
    while True:
        alive = st.weight_total > _DEAD_FRACTION * data.total_weight
        if not alive.all() and relocations < 10 * C.shape[0] and n_iter < max_iter:
            C, moved = _relocate_dead(X, C, st, data, owner, farthest)
            relocations += int(moved)
            hist_g.clear()
            hist_f.clear()
            prev = None
            st = evaluate(C)
            n_iter += 1
            continue
        T = _fixed_point(st, C, data.shift, alive)
        step = T - C
        if update == "damped":
            step *= _DAMPING
        shift2 = float(np.sum(step * step))
        if verbose:
            print(
                f"[{owner}] pass {n_iter}: objective {st.objective:.10g}, centroid shift^2 {shift2:.3e}"
            )
        if shift2 <= tol:
            return _RunResult(C, st, n_iter, True, False, shift2)
        if n_iter >= max_iter:
            return _RunResult(C, st, n_iter, False, False, shift2)
        G = C + step
        if update == "fixed-point":
            if prev is not None and float(np.sum((G - prev[0]) ** 2)) <= tol:
                # Period 2: C_{t+1} == C_{t-1}; the map will alternate forever.
                if verbose:
                    print(f"[{owner}] period-2 cycle detected at pass {n_iter}")
                best = (C, st) if st.objective <= prev[1].objective else prev
                return _RunResult(best[0], best[1], n_iter, False, True, shift2)
            prev = (C, st)
            C, st = G, evaluate(G)
            n_iter += 1
            continue
        if acceleration == "anderson":
            hist_g.append(G.ravel())
            hist_f.append(step.ravel())
            if len(hist_f) > _ANDERSON_MEMORY + 1:
                del hist_g[0], hist_f[0]
            if len(hist_f) > 1:
                dF = np.diff(np.stack(hist_f), axis=0).T  # (K*D, m)
                dG = np.diff(np.stack(hist_g), axis=0).T
                gamma = np.linalg.lstsq(dF, hist_f[-1], rcond=None)[0]
                cand = (G.ravel() - dG @ gamma).reshape(C.shape)
                if np.isfinite(cand).all():
                    st_c = evaluate(cand)
                    n_iter += 1
                    if st_c.objective <= st.objective + 4 * eps * abs(st.objective):
                        C, st = cand, st_c
                        continue
                # The extrapolation raised J: restart the history from the plain step.
                del hist_g[:-1], hist_f[:-1]
                if n_iter >= max_iter:
                    return _RunResult(C, st, n_iter, False, False, shift2)
        C, st = G, evaluate(G)
        n_iter += 1


# --------------------------------------------------------------------------- #
# estimators


class _EKMBase(ClusterMixin, TransformerMixin, BaseEstimator):
    """Prediction-side methods shared by the batch and mini-batch estimators."""

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "alpha": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "init": [StrOptions({"k-means++", "random"}), "array-like"],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "update": [StrOptions({"damped", "fixed-point"})],
        "random_state": ["random_state", np.random.Generator],
        "verbose": ["verbose"],
    }

    # -- validation ---------------------------------------------------------
    def _validate_fit_X(self, X: Any, reset: bool = True, check_finite: bool = True) -> np.ndarray:
        X = _sk_validate_data(
            self, X, reset=reset, dtype=[np.float64, np.float32], order="C", ensure_all_finite=False
        )
        if check_finite:
            _check_finite(X)
        return X

    def _check_test_data(self, X: Any) -> np.ndarray:
        X = _sk_validate_data(
            self, X, reset=False, dtype=[np.float64, np.float32], order="C", ensure_all_finite=False
        )
        _check_finite(X)
        return X

    def _check_params_values(self, n_samples: int) -> None:
        if n_samples < self.n_clusters:
            raise ValueError(
                f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}: "
                f"give at least {self.n_clusters} samples or lower n_clusters"
            )
        if not isinstance(self.alpha, str) and not np.isfinite(self.alpha):
            raise ValueError(f"alpha={self.alpha!r} must be a finite positive number or 'auto'")

    def _resolve_alpha(self, data: _DataStats) -> float:
        return _auto_alpha(data.mean_sq_dev) if isinstance(self.alpha, str) else float(self.alpha)

    def _init_centers(
        self, X: np.ndarray, sample_weight: np.ndarray | None, rs: np.random.RandomState
    ) -> np.ndarray:
        k = self.n_clusters
        if isinstance(self.init, str) and self.init == "k-means++":
            # One candidate per step (the original D^2 sampling): scikit-learn's greedy
            # local trials pick the candidate that lowers the K-means potential most,
            # which splits large clusters and skips small ones (the uniform effect).
            # Measured on the paper's Data-A: 43-63% of starts reach the good minimum
            # instead of 17-23%.
            centers, _ = kmeans_plusplus(
                X, k, sample_weight=sample_weight, random_state=rs, n_local_trials=1
            )
            return centers.astype(np.float64)
        if isinstance(self.init, str) and self.init == "random":
            p = None if sample_weight is None else sample_weight / sample_weight.sum()
            idx = rs.choice(X.shape[0], size=k, replace=False, p=p)
            return X[idx].astype(np.float64)
        init = np.asarray(self.init, dtype=np.float64)
        if init.shape != (k, X.shape[1]):
            raise ValueError(
                f"init array has shape {init.shape}, expected (n_clusters, n_features) = {(k, X.shape[1])}"
            )
        if not np.isfinite(init).all():
            raise ValueError(
                f"init array contains {int((~np.isfinite(init)).sum())} NaN or infinite values"
            )
        return init.copy()

    # -- prediction ---------------------------------------------------------
    def _pred_shift(self) -> np.ndarray | None:
        return getattr(self, "_shift", None)

    @_blas1
    def predict(self, X: Any) -> np.ndarray:
        """Index of the nearest centroid for each sample.

        Parameters
        ----------
        X : array-like or dask.array of shape (n_samples, n_features)

        Returns
        -------
        labels : ndarray of shape (n_samples,), int64
            A lazy ``dask.array`` of the same for a Dask input.
        """
        check_is_fitted(self)
        if _ekm_dask.is_dask_array(X):
            X = _ekm_dask.check_dask_X(X, self.n_features_in_)
            return _ekm_dask.predict(X, self.cluster_centers_, self._pred_shift())
        X = self._check_test_data(X)
        return _assign(X, self.cluster_centers_, shift=self._pred_shift())[0]

    @_blas1
    def transform(self, X: Any) -> np.ndarray:
        """Squared Euclidean distances to every centroid.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        distances : ndarray of shape (n_samples, n_clusters), dtype of X
        """
        check_is_fitted(self)
        X = self._check_test_data(X)
        return _per_sample(
            X, self.cluster_centers_, self.alpha_, "distances", shift=self._pred_shift()
        )

    @_blas1
    def membership(self, X: Any) -> np.ndarray:
        """Soft memberships ``U_kn = softmax_k(-alpha_ d_kn)``; each row sums to 1.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        U : ndarray of shape (n_samples, n_clusters), dtype of X
        """
        check_is_fitted(self)
        X = self._check_test_data(X)
        return _per_sample(
            X, self.cluster_centers_, self.alpha_, "membership", shift=self._pred_shift()
        )

    @_blas1
    def equilibrium_weights(self, X: Any) -> np.ndarray:
        """Equilibrium weights ``w_kn = U_kn (1 - alpha_ (d_kn - J_n))`` (the paper's Eq. 38).

        Each row sums to 1; single weights can be negative (the repulsion
        between centroids).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        w : ndarray of shape (n_samples, n_clusters), dtype of X
        """
        check_is_fitted(self)
        X = self._check_test_data(X)
        return _per_sample(
            X, self.cluster_centers_, self.alpha_, "weights", shift=self._pred_shift()
        )

    @_blas1
    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Minus the EKM objective ``J = sum_n sum_k U_kn d_kn`` on X (higher is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        X = self._check_test_data(X)
        per = _per_sample(
            X, self.cluster_centers_, self.alpha_, "objective", shift=self._pred_shift()
        )
        if sample_weight is None:
            return -float(per.sum(dtype=np.float64))
        sw = _check_sample_weight(sample_weight, X, dtype=np.float64)
        return -float(sw @ per.astype(np.float64))

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


class EquilibriumKMeans(_EKMBase):
    """Equilibrium K-Means: K-means with a repulsion that resists the uniform effect.

    Minimises ``J = sum_n sum_k U_kn ||x_n - c_k||^2`` with
    ``U_kn = softmax_k(-alpha ||x_n - c_k||^2)`` (a smooth stand-in for
    ``sum_n min_k d_kn``). Its stationary points satisfy
    ``c_k = sum_n w_kn x_n / sum_n w_kn`` with the equilibrium weights
    ``w_kn = U_kn (1 - alpha (d_kn - J_n))``, which can be negative: the
    points around a centroid push the other centroids away, and large
    clusters push harder, so small clusters keep their own centroid
    (Yudong He, arXiv 2402.14490, 2024).

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters.
    alpha : float or "auto", default="auto"
        Inverse temperature, > 0. ``"auto"`` is the author's default
        ``2 / mean_n ||x_n - mean(X)||^2``. Large values approach hard K-means,
        small values pull every centroid towards the mean. Any finite value
        from 1e-12 to 1e300 is computed without overflow.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), default="k-means++"
        Starting centroids: k-means++ seeding (D^2 sampling with one candidate
        per step; scikit-learn's greedy variant favours splitting large
        clusters), ``n_clusters`` distinct samples, or given centroids (then a
        single start is run).
    n_init : int, default=10
        Number of starts; the one with the lowest objective J is kept. The
        objective often has a good and a bad minimum on imbalanced data (on
        the paper's Data-A about one start in three lands in the bad one), so
        several starts matter more than for K-means.
    max_iter : int, default=300
        Maximum number of passes over the data per start.
    tol : float, default=1e-4
        Convergence when the squared Frobenius norm of the centroid update is
        at most ``tol`` times the mean feature variance of X (scikit-learn's
        convention).
    update : {"damped", "fixed-point"}, default="damped"
        ``"damped"`` moves half way to the fixed point,
        ``c <- c + 0.5 (c_fixed - c)``, which converges to a minimum of J.
        ``"fixed-point"`` is the paper's plain rule ``c <- c_fixed``. It often
        falls into a period-2 cycle (successive centroids jump back and forth
        while iterates two steps apart agree); the fit then stops, keeps the
        lower-J state of the two, sets ``converged_ = False`` and issues a
        ``ConvergenceWarning``. Caveat: on some data the cycling states cluster
        better than the minimum of J (a uniform square of 5000 points plus eight
        blobs of 50: ARI about 0.997 cycling, 0.14-0.22 converged), which is why
        the rule stays available.
    acceleration : {"anderson"} or None, default="anderson"
        With ``update="damped"``, extrapolate from the last five damped steps
        (Anderson acceleration) and keep the extrapolated centroids only if J
        does not increase; otherwise take the plain damped step. About halves
        the passes. None: plain damped steps. Ignored for ``"fixed-point"``.
    random_state : int, RandomState, Generator or None, default=None
        Seeds the initialisation.
    verbose : int, default=0
        Print the objective and centroid shift at every pass.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        Centroids (dtype of the training data).
    labels_ : ndarray of shape (n_samples,)
        Index of the nearest centroid of every training sample.
    alpha_ : float
        The alpha used.
    objective_ : float
        J at ``cluster_centers_`` on the training data (weighted by sample_weight).
    inertia_ : float
        Sum of squared distances to the nearest centroid.
    n_iter_ : int
        Passes over the data run by the kept start.
    converged_ : bool
        Whether the kept start met ``tol`` (False after ``max_iter`` or a
        period-2 cycle).
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when X has string feature names.

    Examples
    --------
    >>> from aelab.clustering import EquilibriumKMeans
    >>> from aelab.clustering.datasets import make_paper_data
    >>> X, y = make_paper_data("A", random_state=0)
    >>> ekm = EquilibriumKMeans(3, random_state=0).fit(X)
    >>> ekm.cluster_centers_.shape
    (3, 2)
    """

    _parameter_constraints: dict = {
        **_EKMBase._parameter_constraints,
        "acceleration": [StrOptions({"anderson"}), None],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        alpha: float | str = "auto",
        init: str | np.ndarray = "k-means++",
        n_init: int = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        update: str = "damped",
        acceleration: str | None = "anderson",
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        verbose: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.alpha = alpha
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.update = update
        self.acceleration = acceleration
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    @_blas1
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> EquilibriumKMeans:
        """Cluster X.

        Parameters
        ----------
        X : array-like or dask.array of shape (n_samples, n_features)
            Training data; float32 stays float32. A ``dask.array`` is never
            gathered: each pass computes per-block sufficient statistics that
            Dask sums (on a ``dask.distributed`` cluster when a Client is
            active), and ``labels_`` is then a lazy Dask array. k-means++ and
            random starts are drawn from a uniform sample of
            ``max(20000, 1000 * n_clusters)`` rows.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample.

        Returns
        -------
        self : EquilibriumKMeans
        """
        if _ekm_dask.is_dask_array(X):
            return self._fit_dask(X, sample_weight)
        X = self._validate_fit_X(X, check_finite=False)  # _DataStats checks it
        self._check_params_values(X.shape[0])
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        data = _DataStats(X, sw)
        alpha = self._resolve_alpha(data)
        tol = self.tol * data.mean_var
        rs = _random_state(self.random_state)
        n_init = 1 if not isinstance(self.init, str) else self.n_init
        owner = type(self).__name__

        best: _RunResult | None = None
        outcomes = []
        for i in range(n_init):
            C0 = self._init_centers(X, sw, rs)
            if self.verbose:
                print(f"[{owner}] start {i + 1}/{n_init}, alpha {alpha:.6g}")
            res = _run_ekm(
                X, C0, alpha, data, sw,
                update=self.update, acceleration=self.acceleration,
                max_iter=self.max_iter, tol=tol, verbose=self.verbose, owner=owner,
            )  # fmt: skip
            outcomes.append(res)
            if best is None or res.stats.objective < best.stats.objective:
                best = res
        assert best is not None
        self._warn_convergence(best, outcomes)

        self._shift = data.shift
        self.cluster_centers_ = best.centers.astype(X.dtype)
        self.labels_ = _assign(X, self.cluster_centers_, shift=data.shift)[0]
        self.alpha_ = alpha
        self.objective_ = float(best.stats.objective)
        self.inertia_ = float(best.stats.inertia)
        self.n_iter_ = int(best.n_iter)
        self.converged_ = bool(best.converged)
        return self

    def _fit_dask(self, X: Any, sample_weight: Any) -> EquilibriumKMeans:
        """:meth:`fit` on a dask.array: the same iteration, each pass a Dask reduction."""
        X = _ekm_dask.check_dask_X(X)
        self._check_params_values(X.shape[0])
        self.n_features_in_ = int(X.shape[1])
        sw = None if sample_weight is None else _ekm_dask._aligned_weights(sample_weight, X)
        data = _ekm_dask.DaskDataStats(X, sw)
        alpha = self._resolve_alpha(data)  # type: ignore[arg-type]
        tol = self.tol * data.mean_var
        rs = _random_state(self.random_state)
        n_init = 1 if not isinstance(self.init, str) else self.n_init
        owner = type(self).__name__
        evaluate = _ekm_dask.make_evaluate(X, sw, alpha, data.shift)
        farthest = _ekm_dask.make_farthest(X, data.shift)
        sample = sample_idx = None
        if isinstance(self.init, str):
            sample, sample_idx = _ekm_dask.sample_rows(X, self.n_clusters, rs)
        sw_sample = None
        if sw is not None and sample_idx is not None:
            sw_sample = np.asarray(sw[:, 0][sample_idx].compute(), dtype=np.float64)
        best: _RunResult | None = None
        outcomes = []
        for i in range(n_init):
            if sample is not None:
                C0 = self._init_centers(sample, sw_sample, rs)
            else:
                C0 = self._init_centers(np.empty((0, X.shape[1]), X.dtype), None, rs)
            if self.verbose:
                print(f"[{owner}] start {i + 1}/{n_init} (dask), alpha {alpha:.6g}")
            res = _run_ekm(
                X, C0, alpha, data, None,  # type: ignore[arg-type]
                update=self.update, acceleration=self.acceleration, max_iter=self.max_iter,
                tol=tol, verbose=self.verbose, owner=owner, evaluate=evaluate, farthest=farthest,
            )  # fmt: skip
            outcomes.append(res)
            if best is None or res.stats.objective < best.stats.objective:
                best = res
        assert best is not None
        self._warn_convergence(best, outcomes)
        self._shift = data.shift
        self.cluster_centers_ = best.centers.astype(X.dtype)
        self.labels_ = _ekm_dask.predict(X, self.cluster_centers_, data.shift)
        self.alpha_ = alpha
        self.objective_ = float(best.stats.objective)
        self.inertia_ = float(best.stats.inertia)
        self.n_iter_ = int(best.n_iter)
        self.converged_ = bool(best.converged)
        return self

    def _warn_convergence(self, best: _RunResult, outcomes: list[_RunResult]) -> None:
        n = len(outcomes)
        if best.cycled:
            n_cyc = sum(r.cycled for r in outcomes)
            warnings.warn(
                f"update='fixed-point' fell into a period-2 cycle (centroids alternate between two "
                f"states) in {n_cyc} of {n} start(s); kept the lower-objective state of the kept "
                f"start's pair. Use update='damped' for a converged minimum of J.",
                ConvergenceWarning,
                stacklevel=3,
            )
        elif not best.converged:
            n_max = sum(not r.converged and not r.cycled for r in outcomes)
            warnings.warn(
                f"EquilibriumKMeans reached max_iter={self.max_iter} before converging in {n_max} of "
                f"{n} start(s) (last squared centroid shift {best.last_shift:.3g} of the kept start); "
                f"raise max_iter or tol.",
                ConvergenceWarning,
                stacklevel=3,
            )


class MiniBatchEquilibriumKMeans(_EKMBase):
    """Equilibrium K-Means on mini-batches, for data that does not fit in memory.

    Each batch's sufficient statistics ``sum_n w_kn x_n`` and ``sum_n w_kn``
    (computed at the current centroids) are added to running sums after
    these are multiplied by ``forget``; the centroids then take a damped step
    towards the running fixed point ``sum w x / sum w``. Forgetting matters:
    weights computed early, at wrong centroids, would otherwise steer the
    centroids for ever (the author's mini-batch keeps them and gets ARI 0.38 on
    the paper's Data-A, against 0.96 for the full batch).

    Parameters
    ----------
    n_clusters : int, default=8
    alpha : float or "auto", default="auto"
        As in :class:`EquilibriumKMeans`; ``"auto"`` is computed on X in
        ``fit`` and on the first batch in ``partial_fit``.
    init : {"k-means++", "random"} or array-like of shape (n_clusters, n_features), default="k-means++"
        Seeding, on a random subset of ``init_size`` samples in ``fit`` and on
        the first batch in ``partial_fit``.
    n_init : int, default=10
        Starts in ``fit``; the one with the lowest objective J over X is kept.
    max_iter : int, default=100
        Maximum number of epochs (passes over X) per start in ``fit``.
    batch_size : int, default=1024
    forget : float in [0, 1) or "auto", default="auto"
        Factor applied to the running statistics before a batch is added
        (0: the current batch only; 0.9: a batch's influence falls tenfold
        over about 22 further batches). ``"auto"`` remembers about one epoch
        in ``fit`` (``1 - batch_size / n_samples``) and uses 0.9 in
        ``partial_fit``.
    step : float, default=0.5
        Fraction of the way the centroids move towards the running fixed
        point per batch (0.5: the damped rule, 1: the paper's rule).
    tol : float, default=1e-4
        ``fit`` stops when the squared centroid shift over an epoch is at most
        ``tol`` times the mean feature variance.
    init_size : int or None, default=None
        Samples used for the k-means++ seeding in ``fit`` (None: ``max(3 *
        batch_size, 10000)``).
    update : {"damped", "fixed-point"}, default="damped"
        Shorthand: ``"fixed-point"`` forces ``step = 1``.
    random_state : int, RandomState, Generator or None, default=None
    verbose : int, default=0

    Attributes
    ----------
    cluster_centers_, labels_ (after ``fit``), alpha_, objective_, inertia_ (after ``fit``),
    n_iter_ (epochs of the kept start), n_steps_ (batches seen), converged_,
    weighted_sums_ (ndarray of shape (n_clusters, n_features)), weight_totals_ (ndarray of shape (n_clusters,))
    """

    _parameter_constraints: dict = {
        **_EKMBase._parameter_constraints,
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "forget": [Interval(Real, 0, 1, closed="left"), StrOptions({"auto"})],
        "step": [Interval(Real, 0, 1, closed="right")],
        "init_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        alpha: float | str = "auto",
        init: str | np.ndarray = "k-means++",
        n_init: int = 10,
        max_iter: int = 100,
        batch_size: int = 1024,
        forget: float | str = "auto",
        step: float = 0.5,
        tol: float = 1e-4,
        init_size: int | None = None,
        update: str = "damped",
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        verbose: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.alpha = alpha
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.forget = forget
        self.step = step
        self.tol = tol
        self.init_size = init_size
        self.update = update
        self.random_state = random_state
        self.verbose = verbose

    # -- one mini-batch step -------------------------------------------------
    def _batch_step(
        self,
        Xb: np.ndarray,
        swb: np.ndarray | None,
        C: np.ndarray,
        sums: np.ndarray,
        totals: np.ndarray,
        alpha: float,
        forget: float,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One update from a batch; returns new ``(C, sums, totals)`` (sums in data coordinates)."""
        x_sq = _row_sq_norms(Xb, None)
        st = _sufficient_stats(Xb, C, alpha, x_sq=x_sq, sample_weight=swb)
        sums = forget * sums + st.weighted_sum
        totals = forget * totals + st.weight_total
        batch_w = float(Xb.shape[0] if swb is None else swb.sum())
        C = C.copy()
        gone = np.flatnonzero(totals <= _DEAD_FRACTION * batch_w)
        if gone.size:
            far = _farthest(Xb, C, gone.size)
            moves = []
            for k, idx in zip(gone, far, strict=False):
                C[k] = Xb[idx]
                sums[k] = 0.0
                totals[k] = 0.0
                moves.append(
                    f"centroid {k} (total weight {st.weight_total[k]:.3g}) -> batch sample {idx}"
                )
            warnings.warn(
                f"{type(self).__name__}: {gone.size} centroid(s) had a vanishing total weight and "
                f"were relocated to the farthest sample(s) of the batch: {'; '.join(moves)}",
                RuntimeWarning,
                stacklevel=3,
            )
        alive = totals > _DEAD_FRACTION * batch_w
        step = 1.0 if self.update == "fixed-point" else self.step
        C[alive] += step * (sums[alive] / totals[alive, None] - C[alive])
        return C, sums, totals

    # -- fit -------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    @_blas1
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> MiniBatchEquilibriumKMeans:
        """Cluster X by passes of mini-batches.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MiniBatchEquilibriumKMeans
        """
        X = self._validate_fit_X(X, check_finite=False)  # _DataStats checks it
        n, d = X.shape
        self._check_params_values(n)
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        data = _DataStats(X, sw)
        alpha = self._resolve_alpha(data)
        tol = self.tol * data.mean_var
        rs = _random_state(self.random_state)
        bs = min(self.batch_size, n)
        init_size = min(n, self.init_size or max(3 * bs, 10_000))
        n_init = 1 if not isinstance(self.init, str) else self.n_init
        forget = min(0.999, 1.0 - bs / n) if self.forget == "auto" else float(self.forget)

        best = None
        for i in range(n_init):
            sub = rs.choice(n, size=init_size, replace=False) if init_size < n else np.arange(n)
            sub.sort()
            C = self._init_centers(X[sub], None if sw is None else sw[sub], rs)
            sums = np.zeros((self.n_clusters, d))
            totals = np.zeros(self.n_clusters)
            converged = False
            steps = 0
            for epoch in range(1, self.max_iter + 1):
                C_start = C.copy()
                order = rs.permutation(n)
                for s in range(0, n, bs):
                    idx = np.sort(order[s : s + bs])
                    C, sums, totals = self._batch_step(
                        X[idx], None if sw is None else sw[idx], C, sums, totals, alpha, forget
                    )
                    steps += 1
                shift2 = float(np.sum((C - C_start) ** 2))
                if self.verbose:
                    print(
                        f"[{type(self).__name__}] start {i + 1}, epoch {epoch}: squared centroid shift {shift2:.3e}"
                    )
                if shift2 <= tol:
                    converged = True
                    break
            st = _sufficient_stats(X, C, alpha, x_sq=data.x_sq, sample_weight=sw, shift=data.shift)
            if best is None or st.objective < best[1].objective:
                best = (C, st, epoch, converged, sums, totals, steps)
        assert best is not None
        C, st, epochs, converged, sums, totals, steps = best
        if not converged:
            warnings.warn(
                f"{type(self).__name__} reached max_iter={self.max_iter} epochs before converging; "
                f"raise max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._shift = data.shift
        self.cluster_centers_ = C.astype(X.dtype)
        self.labels_ = _assign(X, self.cluster_centers_, shift=data.shift)[0]
        self.alpha_ = alpha
        self.objective_ = float(st.objective)
        self.inertia_ = float(st.inertia)
        self.n_iter_ = int(epochs)
        self.n_steps_ = int(steps)
        self.converged_ = bool(converged)
        self.weighted_sums_ = sums
        self.weight_totals_ = totals
        return self

    @_blas1
    def partial_fit(
        self, X: Any, y: Any = None, sample_weight: Any = None
    ) -> MiniBatchEquilibriumKMeans:
        """Update the centroids with one mini-batch.

        The first call seeds the centroids (and ``alpha_`` when ``alpha="auto"``)
        from this batch; it must hold at least ``n_clusters`` samples.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : MiniBatchEquilibriumKMeans
        """
        first = not hasattr(self, "cluster_centers_")
        if first:
            self._validate_params()
        X = self._validate_fit_X(X, reset=first)
        sw = None
        if sample_weight is not None:
            sw = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if first:
            self._check_params_values(X.shape[0])
            self._rs = _random_state(self.random_state)
            data = _DataStats(X, sw)
            self.alpha_ = self._resolve_alpha(data)
            C = self._init_centers(X, sw, self._rs)
            self.weighted_sums_ = np.zeros((self.n_clusters, X.shape[1]))
            self.weight_totals_ = np.zeros(self.n_clusters)
            self.n_steps_ = 0
            self.n_iter_ = 0
            self.converged_ = False
        else:
            C = self.cluster_centers_.astype(np.float64)
        C_new, self.weighted_sums_, self.weight_totals_ = self._batch_step(
            X, sw, C, self.weighted_sums_, self.weight_totals_, self.alpha_,
            0.9 if self.forget == "auto" else float(self.forget),
        )  # fmt: skip
        self._shift = None
        self.cluster_centers_ = C_new.astype(X.dtype)
        self.n_steps_ += 1
        self.n_iter_ = self.n_steps_
        return self
