"""Cluster maps: 2-D embeddings coloured by cluster, with centroids and true classes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from aelab.viz._figure import _new_figure
from aelab.viz.images import _to_numpy

__all__ = ["cluster_map", "cluster_panels"]

# "X" is kept for centroids, so true classes never use it.
_MARKERS = ("o", "s", "^", "v", "D", "P", "*", "<", ">", "h", "p", "d", "8", "H")


def _cluster_colours(k: int) -> list[Any]:
    if k <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(k)]
    if k <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(k)]
    cmap = colormaps["turbo"]
    return [cmap(v) for v in np.linspace(0.05, 0.95, k)]


def _int_labels(a: Any, n: int, what: str) -> np.ndarray:
    y = _to_numpy(a)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},), one per point, got shape {y.shape}")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"{what} must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise ValueError(f"{what} must be non-negative integers (0, 1, ...), got {int(y.min())}")
    return y


def _validate(
    emb: Any,
    labels: Any,
    centroids_emb: Any,
    true_labels: Any,
    class_names: Sequence[str] | None,
    where: str = "",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    e = _to_numpy(emb)
    if e.ndim != 2 or e.shape[1] != 2 or e.shape[0] == 0:
        raise ValueError(
            f"{where}emb must have shape (n_samples, 2), got {e.shape}; embed it first (embed_2d)"
        )
    e = e.astype(np.float64)
    if not np.isfinite(e).all():
        raise ValueError(f"{where}emb contains NaN or infinite values")
    y = _int_labels(labels, e.shape[0], f"{where}labels")
    c = None
    if centroids_emb is not None:
        c = _to_numpy(centroids_emb)
        if c.ndim != 2 or c.shape[1] != 2:
            raise ValueError(f"{where}centroids_emb must have shape (n_clusters, 2), got {c.shape}")
        if c.shape[0] <= int(y.max()):
            raise ValueError(
                f"{where}centroids_emb has {c.shape[0]} rows but labels go up to {int(y.max())}; "
                "row k must be the centroid of cluster k"
            )
        c = c.astype(np.float64)
    t = None
    if true_labels is not None:
        t = _int_labels(true_labels, e.shape[0], f"{where}true_labels")
        if class_names is not None and len(class_names) <= int(t.max()):
            raise ValueError(
                f"class_names has {len(class_names)} names but true_labels go up to {int(t.max())}"
            )
    return e, y, c, t


def _draw_cluster_map(
    ax: Axes,
    emb: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray | None,
    true_labels: np.ndarray | None,
    class_names: Sequence[str] | None,
    title: str | None,
    *,
    legend: bool,
    point_size: float,
) -> None:
    """Draw one cluster map on ``ax``; inputs are validated arrays."""
    k = max(int(labels.max()) + 1, 0 if centroids is None else centroids.shape[0])
    colours = _cluster_colours(k)
    sizes = np.bincount(labels, minlength=k)
    handles: list[Any] = []
    for c in range(k):
        mask = labels == c
        label = f"cluster {c} (n={int(sizes[c])})"
        if true_labels is None:
            h = ax.scatter(
                *emb[mask].T, s=point_size, color=colours[c], linewidths=0, alpha=0.8, label=label
            )
        else:
            for t in np.unique(true_labels[mask]):
                sel = mask & (true_labels == t)
                ax.scatter(
                    *emb[sel].T,
                    s=point_size,
                    color=colours[c],
                    marker=_MARKERS[t % len(_MARKERS)],
                    linewidths=0,
                    alpha=0.8,
                )
            h = Line2D([], [], linestyle="", marker="o", color=colours[c], label=label)
        handles.append(h)
    if centroids is not None:
        ax.scatter(
            *centroids.T,
            s=point_size * 12 + 60,
            marker="X",
            c=colours[: centroids.shape[0]],
            edgecolors="black",
            linewidths=1.5,
            zorder=3,
        )
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="X",
                markersize=10,
                color="0.85",
                markeredgecolor="black",
                label="centroids",
            )
        )
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    if not legend:
        return
    if true_labels is not None:
        # One legend with a "true class" section rather than two legends: only
        # the axes' own legend is seen by the constrained layout.
        handles.append(Line2D([], [], linestyle="", marker="", label="true class:"))
        for t in np.unique(true_labels):
            name = class_names[t] if class_names is not None else f"class {t}"
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="",
                    marker=_MARKERS[t % len(_MARKERS)],
                    color="0.35",
                    label=str(name),
                )
            )
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=7,
        ncol=math.ceil(len(handles) / 24),
        title="clusters",
        title_fontsize=8,
    )


def cluster_map(
    emb: Any,
    labels: Any,
    *,
    centroids_emb: Any = None,
    true_labels: Any = None,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
    point_size: float = 12.0,
) -> Figure:
    """A 2-D map of points coloured by cluster, with centroids and true classes.

    Parameters
    ----------
    emb : array-like of shape (n_samples, 2)
        Point positions, e.g. from :func:`aelab.viz.embed_2d`.
    labels : array-like of shape (n_samples,)
        Cluster of each point, integers 0 .. n_clusters - 1.
    centroids_emb : array-like of shape (n_clusters, 2), optional
        Centroid positions in the same map (row k is cluster k), drawn as large
        black-edged X markers in the cluster's colour.
    true_labels : array-like of shape (n_samples,), optional
        True class of each point, drawn as the marker shape, with a second
        legend naming the classes.
    class_names : sequence of str, optional
        Names for the true classes (indexed by class id).
    title : str, optional
        Axes title.
    point_size : float, default=12.0
        Marker area of the points.

    Returns
    -------
    matplotlib.figure.Figure
        One axes. Its cluster legend lists ``"cluster k (n=size)"`` for every
        cluster (empty clusters included, n=0), ``"centroids"`` when given,
        and with ``true_labels`` a ``"true class:"`` line followed by the class
        names (or ``"class t"``).
    """
    e, y, c, t = _validate(emb, labels, centroids_emb, true_labels, class_names)
    fig = _new_figure((6.4, 4.8))
    ax = fig.subplots()
    _draw_cluster_map(ax, e, y, c, t, class_names, title, legend=True, point_size=point_size)
    return fig


def _sizes_line(labels: np.ndarray, k: int, per_line: int = 10) -> str:
    sizes = [str(int(s)) for s in np.bincount(labels, minlength=k)]
    chunks = [" ".join(sizes[i : i + per_line]) for i in range(0, len(sizes), per_line)]
    return "sizes: " + "\n".join(chunks)


_PANEL_KEYS = {"emb", "labels", "centroids_emb", "true_labels", "title"}


def cluster_panels(
    panels: Sequence[Mapping[str, Any]],
    *,
    class_names: Sequence[str] | None = None,
    ncols: int | None = None,
    legend: bool = False,
    suptitle: str | None = None,
    panel_size: float = 3.6,
    point_size: float = 8.0,
) -> Figure:
    """Several cluster maps side by side, e.g. one per alpha of an EKM sweep.

    Parameters
    ----------
    panels : sequence of dict
        One dict per panel with keys ``emb`` (n_samples, 2) and ``labels``
        (n_samples,), and optionally ``centroids_emb`` (n_clusters, 2),
        ``true_labels`` (n_samples,) and ``title`` (e.g. ``"alpha = 0.1"``).
        Each is drawn as by :func:`cluster_map`; the cluster sizes are added
        to the panel title (``"sizes: 98 102 100"``).
    class_names : sequence of str, optional
        Names of the true classes, shared by all panels.
    ncols : int, optional
        Panels per row; default ``min(4, len(panels))``.
    legend : bool, default=False
        Give each panel its own legends (crowded with many panels; the sizes
        are in the titles either way).
    suptitle : str, optional
        Figure title.
    panel_size : float, default=3.6
        Inches per panel side.
    point_size : float, default=8.0
        Marker area of the points.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(panels)`` axes with maps (row-major); unused grid cells are removed.
    """
    if isinstance(panels, Mapping) or not isinstance(panels, Sequence) or not panels:
        raise ValueError("panels must be a non-empty list of dicts with keys 'emb' and 'labels'")
    checked = []
    for i, p in enumerate(panels):
        if not isinstance(p, Mapping) or "emb" not in p or "labels" not in p:
            raise ValueError(f"panel {i}: expected a dict with at least 'emb' and 'labels'")
        unknown = set(p) - _PANEL_KEYS
        if unknown:
            raise ValueError(
                f"panel {i}: unknown keys {sorted(unknown)}; allowed: {sorted(_PANEL_KEYS)}"
            )
        arrays = _validate(
            p["emb"],
            p["labels"],
            p.get("centroids_emb"),
            p.get("true_labels"),
            class_names,
            f"panel {i}: ",
        )
        checked.append((arrays, p.get("title")))
    n = len(checked)
    cols = min(4, n) if ncols is None else int(ncols)
    if cols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    width = panel_size * cols * (1.6 if legend else 1.0)
    fig = _new_figure((width, panel_size * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, ((e, y, c, t), title) in zip(axes, checked, strict=False):
        k = max(int(y.max()) + 1, 0 if c is None else c.shape[0])
        full_title = "\n".join(
            s for s in (str(title) if title is not None else "", _sizes_line(y, k)) if s
        )
        _draw_cluster_map(
            ax, e, y, c, t, class_names, full_title, legend=legend, point_size=point_size
        )
    for ax in axes[n:]:
        ax.remove()
    if suptitle:
        fig.suptitle(suptitle)
    return fig
