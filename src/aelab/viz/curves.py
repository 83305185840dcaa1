"""Curves and summaries: training histories, ROC, score histograms, confusion matrices."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aelab.viz._figure import _new_figure
from aelab.viz.images import _to_numpy

__all__ = ["confusion_matrix_plot", "roc_curve_plot", "score_histogram", "training_curves"]


def _run_columns(run: Any, name: str) -> dict[str, list[Any]]:
    """A run as records ``[{"epoch": 1, ...}, ...]`` or columns ``{"epoch": [...], ...}`` -> columns."""
    if isinstance(run, Mapping):
        cols = {
            str(k): list(v)
            for k, v in run.items()
            if isinstance(v, Sequence | np.ndarray) and not isinstance(v, str)
        }
        if len(cols) != len(run):
            raise ValueError(
                f"run {name!r}: a column-form history maps each key to a list of values"
            )
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"run {name!r}: columns have different lengths {sorted(lengths)}")
        return cols
    if isinstance(run, Sequence) and not isinstance(run, str):
        if not all(isinstance(r, Mapping) for r in run):
            raise ValueError(
                f"run {name!r}: a record-form history is a list of dicts, one per epoch"
            )
        keys: list[str] = []
        for r in run:
            keys.extend(str(k) for k in r if str(k) not in keys)
        # A key an epoch lacks becomes NaN, which leaves a gap in the line.
        return {k: [r.get(k, np.nan) for r in run] for k in keys}
    raise ValueError(
        f"run {name!r}: expected a list of per-epoch dicts or a dict of lists, got {type(run).__name__}"
    )


def _normalise_histories(histories: Any) -> dict[str, dict[str, list[Any]]]:
    """Accept one run or a mapping of named runs, in record or column form."""
    if isinstance(histories, Sequence) and not isinstance(histories, str):
        return {"": _run_columns(histories, "run")}
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError(
            "histories must be a non-empty dict {run name: history} or one history "
            "(a list of per-epoch dicts)"
        )
    values = list(histories.values())
    # {"epoch": [...], "train_loss": [...]} is one run in column form, not runs of lists.
    if all(isinstance(v, Sequence | np.ndarray) and not isinstance(v, str) for v in values) and all(
        len(v) == 0 or not isinstance(v[0], Mapping) for v in values
    ):
        return {"": _run_columns(histories, "run")}
    return {str(name): _run_columns(run, str(name)) for name, run in histories.items()}


def _numeric(values: list[Any], what: str) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if v is None:
            continue
        if not isinstance(v, numbers.Real | np.generic) or isinstance(v, bool | np.bool_):
            raise ValueError(f"{what}: entry {i} is {v!r}, expected a number")
        out[i] = float(v)
    return out


def training_curves(
    histories: Any,
    metrics: Sequence[str] = ("loss", "acc"),
    *,
    x_key: str = "epoch",
    title: str | None = None,
) -> Figure:
    """Training histories: one panel per metric, one colour per run, train solid, val dashed.

    Parameters
    ----------
    histories : dict of str to history, or one history
        ``{"augment": history, "no augment": history}``, or a single history.
        A history is a list of per-epoch dicts
        (``[{"epoch": 1, "train_loss": 0.3, "val_loss": 0.4, ...}, ...]``) or a
        dict of equal-length lists (``{"epoch": [...], "train_loss": [...]}``).
        Keys an epoch lacks (or None values) leave gaps.
    metrics : sequence of str, default=("loss", "acc")
        For each metric ``m`` the keys ``train_m`` (solid), ``val_m`` (dashed)
        and a bare ``m`` (solid) are drawn when present. A metric found in no
        run gets no panel.
    x_key : str, default="epoch"
        Key for the x axis; epochs are numbered 1, 2, ... where it is missing.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes per metric that has data, each with a legend ``"<run> train"``,
        ``"<run> val"``.
    """
    if isinstance(metrics, str) or not metrics:
        raise ValueError("metrics must be a non-empty sequence of names, e.g. ('loss', 'acc')")
    runs = _normalise_histories(histories)
    # One colour per run, fixed by the run's position so panels agree.
    colours = {name: f"C{i % 10}" for i, name in enumerate(runs)}
    panels: list[tuple[str, list[tuple[str, str, str, np.ndarray, np.ndarray]]]] = []
    for metric in metrics:
        lines = []
        for name, cols in runs.items():
            n = max((len(v) for v in cols.values()), default=0)
            x = (
                _numeric(cols[x_key], f"{name} {x_key}")
                if x_key in cols
                else np.arange(1, n + 1, dtype=float)
            )
            for key, split, style in (
                (f"train_{metric}", "train", "-"),
                (f"val_{metric}", "val", "--"),
                (metric, "", "-"),
            ):
                if key in cols:
                    y = _numeric(cols[key], f"run {name!r} {key}")
                    if np.isfinite(y).any():
                        label = " ".join(s for s in (name, split) if s) or metric
                        lines.append((label, style, colours[name], x, y))
        if lines:
            panels.append((metric, lines))
    if not panels:
        found = sorted({k for cols in runs.values() for k in cols})
        raise ValueError(
            f"no values for metrics {list(metrics)}; the histories have keys {found}. "
            "Name metrics so that train_<m>, val_<m> or <m> exist"
        )
    fig = _new_figure((4.2 * len(panels), 3.3))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (metric, lines) in zip(axes, panels, strict=True):
        for label, style, colour, x, y in lines:
            finite = np.isfinite(y)
            # Markers keep single-epoch runs and isolated points visible.
            ax.plot(
                x,
                y,
                linestyle=style,
                color=colour,
                label=label,
                marker="o" if finite.sum() < 2 else None,
            )
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _binary_scores(y_true: Any, scores: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = _to_numpy(y_true).ravel()
    s = _to_numpy(scores).astype(float).ravel()
    if y.shape != s.shape:
        raise ValueError(
            f"{what}: y_true has {y.size} values and scores {s.size}; give one score per sample"
        )
    if not np.isfinite(s).all():
        raise ValueError(f"{what}: scores contain NaN or infinite values")
    classes = np.unique(y)
    if not np.isin(classes, (0, 1)).all() or classes.size != 2:
        raise ValueError(
            f"{what}: y_true must hold both 0 (normal) and 1 (anomalous/positive), got classes "
            f"{classes.tolist()}"
        )
    return y.astype(int), s


def roc_curve_plot(
    y_true: Any,
    scores: Any = None,
    *,
    label: str | None = None,
    title: str | None = "ROC curve",
) -> Figure:
    """ROC curve(s) with the AUC in the legend.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,), or dict of str to (y_true, scores)
        Binary labels, 1 for the positive (anomalous) class. Or a mapping
        ``{name: (y_true, scores)}`` to draw several curves on one axes, with
        ``scores`` left as None.
    scores : array-like of shape (n_samples,), optional
        Higher means more likely positive (PyOD's ``decision_function`` convention).
    label : str, optional
        Legend name of the single curve.
    title : str or None, default="ROC curve"
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; its legend has one entry per curve, ``"<name> (AUC = 0.937)"``.
    """
    from sklearn.metrics import auc, roc_curve

    if isinstance(y_true, Mapping):
        if scores is not None:
            raise ValueError(
                "pass either a mapping {name: (y_true, scores)} or y_true and scores, not both"
            )
        if not y_true:
            raise ValueError(
                "the mapping of curves is empty; give at least one {name: (y_true, scores)}"
            )
        curves = {}
        for name, pair in y_true.items():
            if not isinstance(pair, Sequence) or len(pair) != 2:
                raise ValueError(f"curve {name!r}: expected a pair (y_true, scores)")
            curves[str(name)] = _binary_scores(pair[0], pair[1], f"curve {name!r}")
    else:
        if scores is None:
            raise ValueError("scores is missing; call roc_curve_plot(y_true, scores)")
        curves = {label or "": _binary_scores(y_true, scores, "roc_curve_plot")}
    fig = _new_figure((4.6, 4.2))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle=":", color="0.6", label="_chance")
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        value = auc(fpr, tpr)
        ax.plot(fpr, tpr, label=f"{name} (AUC = {value:.3f})" if name else f"AUC = {value:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def score_histogram(
    normal_scores: Any,
    anomalous_scores: Any = None,
    *,
    threshold: float | None = None,
    log: bool = False,
    bins: int = 50,
    density: bool = False,
    labels: tuple[str, str] = ("normal", "anomalous"),
    title: str | None = None,
) -> Figure:
    """Overlaid histograms of anomaly scores, with an optional threshold line.

    Parameters
    ----------
    normal_scores : array-like of shape (n_normal,)
        Scores of normal samples.
    anomalous_scores : array-like of shape (n_anomalous,), optional
        Scores of anomalous samples; None or empty draws the normal ones only.
    threshold : float, optional
        Drawn as a vertical dashed line labelled with its value.
    log : bool, default=False
        Logarithmic count axis (as ``Axes.hist(log=True)``), which keeps a small
        anomalous group visible next to a large normal one.
    bins : int, default=50
        Number of bins, shared by both groups.
    density : bool, default=False
        Plot densities instead of counts, to compare groups of different size.
    labels : tuple of str, default=("normal", "anomalous")
        Legend names of the two groups.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with a legend: the groups drawn, then ``"threshold = <value>"``.
    """
    groups = [(labels[0], _to_numpy(normal_scores).astype(float).ravel(), "C0")]
    if anomalous_scores is not None:
        groups.append((labels[1], _to_numpy(anomalous_scores).astype(float).ravel(), "C3"))
    if groups[0][1].size == 0:
        raise ValueError("normal_scores is empty; pass at least one score")
    groups = [g for g in groups if g[1].size]
    for name, s, _ in groups:
        if not np.isfinite(s).all():
            raise ValueError(f"{name} scores contain NaN or infinite values")
    if int(bins) < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    both = np.concatenate([s for _, s, _ in groups])
    lo, hi = float(both.min()), float(both.max())
    if threshold is not None:
        lo, hi = min(lo, float(threshold)), max(hi, float(threshold))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    fig = _new_figure((5.2, 3.4))
    ax = fig.subplots()
    for name, s, colour in groups:
        ax.hist(
            s,
            bins=edges,
            alpha=0.55,
            color=colour,
            label=f"{name} (n={s.size})",
            log=log,
            density=density,
        )
    if threshold is not None:
        ax.axvline(
            float(threshold),
            color="k",
            linestyle="--",
            linewidth=1.2,
            label=f"threshold = {threshold:.4g}",
        )
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("density" if density else "count")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig


def confusion_matrix_plot(
    cm: Any,
    class_names: Sequence[str] | None = None,
    *,
    normalize: bool = False,
    title: str | None = None,
    cmap: str = "Blues",
) -> Figure:
    """A confusion matrix with the count written in every cell.

    Parameters
    ----------
    cm : array-like of shape (n_classes, n_classes)
        Counts, rows the true class and columns the predicted one (as
        :func:`sklearn.metrics.confusion_matrix` returns).
    class_names : sequence of str, optional
        Tick labels; defaults to 0, 1, ...
    normalize : bool, default=False
        Colour and annotate by the fraction of each true class (row) instead of counts.
    title : str, optional
        Axes title.
    cmap : str, default="Blues"
        Colormap.

    Returns
    -------
    matplotlib.figure.Figure
        One axes holding the matrix image and ``n_classes ** 2`` cell texts.
    """
    m = _to_numpy(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"cm must be a square (n_classes, n_classes) matrix, got shape {m.shape}")
    m = m.astype(float)
    if not np.isfinite(m).all() or (m < 0).any():
        raise ValueError("cm must hold non-negative finite counts")
    k = m.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(
            f"class_names has {len(names)} names for a {k}x{k} matrix; give one per class"
        )
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        shown = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    else:
        shown = m
    side = max(3.2, 0.45 * k + 1.8)
    fig = _new_figure((side, side))
    ax = fig.subplots()
    vmax = 1.0 if normalize else max(float(shown.max()), 1.0)
    ax.imshow(shown, cmap=cmap, vmin=0.0, vmax=vmax)
    for i in range(k):
        for j in range(k):
            text = f"{shown[i, j]:.2f}" if normalize else f"{m[i, j]:.0f}"
            colour = "white" if shown[i, j] > 0.6 * vmax else "black"
            ax.text(
                j, i, text, ha="center", va="center", color=colour, fontsize=8 if k <= 10 else 6
            )
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return fig
