"""Maps of clustered vectors: embed in 2-D (centroids placed in the same map), then draw.

These join :func:`aelab.viz.embed_2d` and :func:`aelab.viz.cluster_map` /
:func:`aelab.viz.cluster_panels` for the common case of "here are my vectors,
their clusters and the centroids": arrays in, figure out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aelab.viz.clusters import cluster_map, cluster_panels
from aelab.viz.embedding import Method, embed_2d
from aelab.viz.images import _to_numpy

__all__ = ["latent_map", "latent_panels"]


def _centroid_block(c: Any, n_features: int, what: str) -> np.ndarray:
    a = _to_numpy(c)
    if a.ndim != 2 or a.shape[1] != n_features:
        raise ValueError(
            f"{what} must have shape (n_clusters, {n_features}) (centroids in the space of X), "
            f"got {a.shape}"
        )
    return a


def latent_map(
    X: Any,
    labels: Any,
    centroids: Any = None,
    *,
    true_labels: Any = None,
    class_names: Sequence[str] | None = None,
    method: Method = "tsne",
    random_state: int = 0,
    title: str | None = None,
    point_size: float = 12.0,
) -> Figure:
    """A 2-D map of vectors coloured by cluster, with the centroids placed in the same map.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The clustered vectors (in the space the clustering saw).
    labels : array-like of shape (n_samples,)
        Cluster of each vector, 0 .. n_clusters - 1.
    centroids : array-like of shape (n_clusters, n_features), optional
        Row k is the centroid of cluster k; embedded with ``extra=`` of
        :func:`embed_2d` (t-SNE places new points in the fitted map).
    true_labels : array-like of shape (n_samples,), optional
        True classes, drawn as marker shapes.
    class_names : sequence of str, optional
    method : {"tsne", "umap", "pca"}, default="tsne"
    random_state : int, default=0
    title : str, optional
    point_size : float, default=12.0

    Returns
    -------
    matplotlib.figure.Figure
        As :func:`cluster_map`: the legend lists every cluster with its size.
    """
    x = _to_numpy(X)
    extra = None if centroids is None else _centroid_block(centroids, x.shape[-1], "centroids")
    emb, cent = embed_2d(x, method=method, random_state=random_state, extra=extra)
    return cluster_map(
        emb, labels, centroids_emb=cent, true_labels=true_labels, class_names=class_names,
        title=title, point_size=point_size,
    )  # fmt: skip


def latent_panels(
    X: Any,
    labels: Sequence[Any],
    centroids: Sequence[Any] | None = None,
    *,
    titles: Sequence[str] | None = None,
    true_labels: Any = None,
    class_names: Sequence[str] | None = None,
    method: Method = "tsne",
    random_state: int = 0,
    legend: bool = True,
    suptitle: str | None = None,
    ncols: int | None = None,
) -> Figure:
    """One map of ``X``, drawn once per clustering (e.g. one panel per EKM alpha).

    The 2-D embedding is computed once, so the panels are comparable point
    for point; every clustering's centroids are placed in that same map.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    labels : sequence of array-like of shape (n_samples,)
        One labelling per panel.
    centroids : sequence of array-like of shape (n_clusters_i, n_features), optional
        One centroid array per panel.
    titles : sequence of str, optional
        One per panel; the cluster sizes are appended by :func:`cluster_panels`.
    true_labels, class_names, method, random_state
        As in :func:`latent_map`.
    legend : bool, default=True
        A legend per panel (cluster sizes and true classes).
    suptitle : str, optional
    ncols : int, optional

    Returns
    -------
    matplotlib.figure.Figure
        ``len(labels)`` panels.
    """
    x = _to_numpy(X)
    n_panels = len(labels)
    if n_panels == 0:
        raise ValueError("labels must hold at least one labelling (one per panel)")
    for name, seq in (("centroids", centroids), ("titles", titles)):
        if seq is not None and len(seq) != n_panels:
            raise ValueError(
                f"{name} has {len(seq)} entries for {n_panels} labellings; give one per panel"
            )
    extra, counts = None, []
    if centroids is not None:
        blocks = [
            _centroid_block(c, x.shape[-1], f"centroids[{i}]") for i, c in enumerate(centroids)
        ]
        counts = [len(b) for b in blocks]
        extra = np.concatenate(blocks)
    emb, cent = embed_2d(x, method=method, random_state=random_state, extra=extra)
    panels = []
    start = 0
    for i in range(n_panels):
        p: dict[str, Any] = {"emb": emb, "labels": labels[i]}
        if cent is not None:
            p["centroids_emb"] = cent[start : start + counts[i]]
            start += counts[i]
        if true_labels is not None:
            p["true_labels"] = true_labels
        if titles is not None:
            p["title"] = titles[i]
        panels.append(p)
    return cluster_panels(
        panels, class_names=class_names, legend=legend, suptitle=suptitle, ncols=ncols
    )
