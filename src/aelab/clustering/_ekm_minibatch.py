"""Equilibrium K-Means on mini-batches (scikit-learn API), for data that does not fit in memory."""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight

from aelab.clustering._ekm_base import _blas1, _EKMBase
from aelab.clustering._ekm_data import _DataStats, _random_state
from aelab.clustering._ekm_iter import _DEAD_FRACTION
from aelab.clustering._ekm_kernels import _assign, _farthest, _row_sq_norms, _sufficient_stats

__all__ = ["MiniBatchEquilibriumKMeans"]


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

    def _run_start(
        self,
        X: np.ndarray,
        sw: np.ndarray | None,
        C: np.ndarray,
        alpha: float,
        forget: float,
        tol: float,
        bs: int,
        rs: np.random.RandomState,
        start: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, bool, int]:
        """Epochs of shuffled batches from centroids C until the epoch's squared shift is <= tol.

        Returns ``(C, sums, totals, epochs, converged, steps)``.
        """
        n = X.shape[0]
        sums = np.zeros((self.n_clusters, X.shape[1]))
        totals = np.zeros(self.n_clusters)
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
                    f"[{type(self).__name__}] start {start + 1}, epoch {epoch}: "
                    f"squared centroid shift {shift2:.3e}"
                )
            if shift2 <= tol:
                return C, sums, totals, epoch, True, steps
        return C, sums, totals, self.max_iter, False, steps

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
            C0 = self._init_centers(X[sub], None if sw is None else sw[sub], rs)
            C, sums, totals, epoch, converged, steps = self._run_start(
                X, sw, C0, alpha, forget, tol, bs, rs, i
            )
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
