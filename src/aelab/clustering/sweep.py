"""What alpha does: fit Equilibrium K-Means at several alphas, and find the alpha
whose cluster sizes best match a target ratio (the study's "which alpha gives 2:1:1").

Alpha is an inverse temperature on squared distances. Small alpha makes every
point's membership soft and pulls all centroids towards the global mean (at
alpha -> 0 they collapse together); large alpha approaches hard K-means, which
favours equal-sized clusters (the "uniform effect"). In between, the
equilibrium weights push centroids of small clusters away from big ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from aelab.clustering.alpha import auto_alpha, resolve_alpha

__all__ = ["alpha_sweep", "ratio_mismatch", "search_alpha"]


def ratio_mismatch(sizes: Sequence[int], ratio: Sequence[float]) -> float:
    """Largest relative deviation of cluster sizes from a target ratio.

    Sizes and ratio are compared sorted (largest first), since cluster numbers
    are arbitrary. 0 is a perfect match; 0.1 means some cluster is 10% away
    from its target size.
    """
    s = np.sort(np.asarray(sizes, dtype=float))[::-1]
    r = np.sort(np.asarray(ratio, dtype=float))[::-1]
    if len(s) != len(r):
        raise ValueError(f"{len(s)} clusters but a ratio of {len(r)} parts")
    target = r / r.sum() * s.sum()
    return float(np.max(np.abs(s - target) / np.maximum(target, 1e-12)))


def _fit(
    X: np.ndarray,
    k: int,
    alpha: float,
    y: np.ndarray | None,
    random_state: int,
    ekm_kwargs: dict[str, Any],
) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from aelab.clustering import EquilibriumKMeans

    est = EquilibriumKMeans(k, alpha=alpha, random_state=random_state, **ekm_kwargs).fit(X)
    sizes = np.bincount(est.labels_, minlength=k)
    row: dict[str, Any] = {
        "alpha": float(est.alpha_),
        "sizes": [int(v) for v in sizes],
        "n_iter": int(est.n_iter_),
        "converged": bool(est.converged_),
        "objective": float(est.objective_),
        "estimator": est,
    }
    if y is not None:
        row["ari"] = float(adjusted_rand_score(y, est.labels_))
        row["nmi"] = float(normalized_mutual_info_score(y, est.labels_))
    return row


def alpha_sweep(
    X: np.ndarray,
    n_clusters: int,
    alphas: Sequence[float],
    *,
    y: np.ndarray | None = None,
    random_state: int = 0,
    **ekm_kwargs: Any,
) -> list[dict[str, Any]]:
    """Fit Equilibrium K-Means once per alpha.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_clusters : int
    alphas : sequence of float, str or AlphaMultiple
        Anything :func:`~aelab.clustering.parse_alpha` reads (``0.05``,
        ``"auto"``, ``"3x"``); multiples are resolved against X.
    y : array-like of shape (n_samples,), optional
        True classes; adds ARI and NMI to each row.
    random_state : int
    **ekm_kwargs
        Other :class:`EquilibriumKMeans` parameters (``n_init``, ``update``...).

    Returns
    -------
    list of dict
        One row per alpha: ``alpha``, ``sizes``, ``n_iter``, ``converged``,
        ``objective``, ``estimator`` (fitted), and ``ari``/``nmi`` with ``y``.
    """
    if not len(alphas):
        raise ValueError("give at least one alpha")
    X = np.asarray(X)
    yy = None if y is None else np.asarray(y)
    values = [resolve_alpha(a, X) for a in alphas]
    return [_fit(X, n_clusters, a, yy, random_state, ekm_kwargs) for a in values]


def search_alpha(
    X: np.ndarray,
    n_clusters: int,
    ratio: Sequence[float],
    *,
    alphas: Sequence[float] | None = None,
    y: np.ndarray | None = None,
    random_state: int = 0,
    **ekm_kwargs: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The alpha whose cluster sizes best match ``ratio``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    n_clusters : int
    ratio : sequence of float, length n_clusters
        Target relative sizes, e.g. ``(2, 1, 1)``.
    alphas : sequence of float, optional
        Candidates; default 25 values from 1e-3 to 1e3 times the automatic
        alpha (:func:`~aelab.clustering.auto_alpha`).
    y, random_state, **ekm_kwargs
        As in :func:`alpha_sweep`.

    Returns
    -------
    best : dict
        The row of the best alpha (lowest :func:`ratio_mismatch`; ties go to
        the lower objective-free choice closest to the automatic alpha), with
        ``mismatch`` added.
    rows : list of dict
        Every candidate's row, in the order tried.
    """
    X = np.asarray(X)
    if len(ratio) != n_clusters:
        raise ValueError(f"ratio has {len(ratio)} parts for {n_clusters} clusters")
    base = auto_alpha(X)
    if alphas is None:
        alphas = base * np.logspace(-3, 3, 25)
    rows = alpha_sweep(X, n_clusters, alphas, y=y, random_state=random_state, **ekm_kwargs)
    for r in rows:
        r["mismatch"] = ratio_mismatch(r["sizes"], ratio)
    best = min(rows, key=lambda r: (round(r["mismatch"], 6), abs(np.log(r["alpha"] / base))))
    return best, rows
