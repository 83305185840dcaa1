"""Scores of a clustering against true classes: accuracy (Hungarian matching), NMI, ARI."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["cluster_accuracy", "clustering_scores"]


def _check_pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 1 or p.ndim != 1 or t.shape != p.shape:
        raise ValueError(
            f"y_true and y_pred must be 1-d and of equal length, got shapes {t.shape} and {p.shape}"
        )
    if t.size == 0:
        raise ValueError("y_true and y_pred are empty")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.dtype.kind not in "iu" or (a < 0).any():
            raise ValueError(f"{name} must hold non-negative integers, got dtype {a.dtype}")
    return t.astype(np.int64), p.astype(np.int64)


def cluster_accuracy(y_true: Any, y_pred: Any) -> float:
    """Accuracy of cluster labels under the best one-to-one matching of clusters to classes.

    The matching maximises the number of correctly labelled points (the
    Hungarian algorithm on the contingency table), as in the clustering
    literature (DEC, the EKM paper). With more clusters than classes the
    surplus clusters match nothing and count as errors.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True classes, non-negative integers.
    y_pred : array-like of shape (n_samples,)
        Cluster labels, non-negative integers.

    Returns
    -------
    float
        In [0, 1].
    """
    from scipy.optimize import linear_sum_assignment

    t, p = _check_pair(y_true, y_pred)
    table = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / t.size)


def clustering_scores(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``acc`` (:func:`cluster_accuracy`), ``nmi`` and ``ari`` of a clustering.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)

    Returns
    -------
    dict of str to float
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t, p = _check_pair(y_true, y_pred)
    return {
        "acc": cluster_accuracy(t, p),
        "nmi": float(normalized_mutual_info_score(t, p)),
        "ari": float(adjusted_rand_score(t, p)),
    }
