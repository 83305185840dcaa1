"""Equilibrium K-Means (scikit-learn API): the batch estimator.

Implements Yudong He, "Imbalanced Data Clustering using Equilibrium K-Means",
arXiv 2402.14490 (2024). The iteration of one start is ``_ekm_iter``, the
numerical kernels ``_ekm_kernels`` (neither imports anything from here), the
shared validation and prediction methods ``_ekm_base``, and the mini-batch
estimator ``_ekm_minibatch``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import _check_sample_weight

from aelab.clustering import _ekm_dask
from aelab.clustering._ekm_base import _blas1, _EKMBase
from aelab.clustering._ekm_data import _check_finite, _DataStats, _random_state  # noqa: F401
from aelab.clustering._ekm_iter import _run_ekm, _RunResult
from aelab.clustering._ekm_kernels import _assign
from aelab.clustering._ekm_minibatch import MiniBatchEquilibriumKMeans

# MiniBatchEquilibriumKMeans and _check_finite are re-exported: callers import them from here.
__all__ = ["EquilibriumKMeans", "MiniBatchEquilibriumKMeans"]


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
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
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
