"""The clustering task: Equilibrium K-Means on a feature file, with alpha search, sweeps and maps.

:func:`run_cluster` reads features (a file, an array, or a folder of shards
clustered with Dask), fits :class:`~aelab.clustering.EquilibriumKMeans`,
optionally searches the alpha whose cluster sizes fit a target ratio and fits
a sweep of alphas, draws the map, writes ``labels.csv``, ``centroids.npy`` and
``summary.json``, and returns a :class:`ClusterResult`. Warnings of the fits
(relocated centroids, slow convergence) are counted in the result, not
printed once per fit.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aelab.clustering import EquilibriumKMeans, parse_alpha, resolve_alpha
from aelab.clustering.space import SPACES
from aelab.files import write_csv
from aelab.tasks.options import with_overrides
from aelab.tasks.outputs import output_file, output_folder
from aelab.tasks.results import Record

__all__ = ["AlphaRow", "ClusterOptions", "ClusterResult", "Scores", "run_cluster"]

PathLike = str | os.PathLike[str]

# The estimator declares its own defaults; the task takes them from there.
_EKM = inspect.signature(EquilibriumKMeans.__init__).parameters
MAPS = ("tsne", "umap", "pca")
UPDATES = ("damped", "fixed-point")
OUTPUT_FILES = (
    "labels.csv",
    "centroids.npy",
    "summary.json",
    "sweep.csv",
    "search.csv",
    "warnings.txt",
)
#: Where :func:`run_cluster` lists every warning of the fits, one a line (only when there are some).
WARNINGS_FILE = "warnings.txt"


def sweep_alphas(text: str, base: float) -> list[float]:
    """The alphas of a sweep such as ``"0.1x,1x,10x"`` (multiples of ``base``) or ``"0.01,0.1"``.

    Each item is read by :func:`aelab.clustering.parse_alpha`; in a sweep a
    multiple (and ``auto``, which is ``1x``) scales the main fit's alpha ``base``.
    """
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise ValueError(f"sweep {text!r}: give alphas separated by commas, e.g. 0.1x,1x,10x")
    out = []
    for a in (parse_alpha(t) for t in items):
        out.append(a if isinstance(a, float) else base * (1.0 if a == "auto" else a.factor))
    return out


@dataclass
class ClusterOptions:
    """Settings of :func:`run_cluster`.

    Parameters
    ----------
    k : int
        Number of clusters, 1 <= k <= n_samples.
    alpha : str
        ``"auto"`` (2 / mean squared distance to the mean), a multiple of it
        (``"3x"``) or a positive number: the main fit's alpha and the base of a
        sweep's multiples.
    target_ratio : list of float, optional
        Search the alpha whose cluster sizes come closest to this ratio
        (e.g. ``[2, 1, 1]``, compared largest first) and use it; needs ``alpha="auto"``.
    sweep : str, optional
        Alphas to compare: ``"0.1x,1x,10x"`` (multiples of the main alpha) or absolute values.
    space : {"raw", "l2", "pca", "l2-pca"}
        Clustering space (centroids, alpha and the map are in it).
    n_components : int
        Dimensions kept by the PCA spaces.
    map : {"tsne", "umap", "pca"}
        How the 2-D map is made.
    seed : int
        Seed of the k-means++ starts and of the map.
    n_init, update, max_iter
        :class:`~aelab.clustering.EquilibriumKMeans` parameters (its defaults).
    key, labels_key : str, optional
        Features and labels arrays inside an ``.npz`` (``labels_key="none"`` ignores labels).
    """

    k: int
    alpha: str = "auto"
    target_ratio: list[float] | None = None
    sweep: str | None = None
    space: str = "raw"
    n_components: int = 32
    map: str = "tsne"
    seed: int = 0
    n_init: int = _EKM["n_init"].default
    update: str = _EKM["update"].default
    max_iter: int = _EKM["max_iter"].default
    key: str | None = None
    labels_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("k", "n_init", "max_iter", "n_components"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        parse_alpha(self.alpha)
        if self.update not in UPDATES:
            raise ValueError(f"update {self.update!r}: choose one of {', '.join(UPDATES)}")
        if self.map not in MAPS:
            raise ValueError(f"unknown map {self.map!r}; choose one of {', '.join(MAPS)}")
        if self.space not in SPACES:
            raise ValueError(f"unknown space {self.space!r}; choose one of {', '.join(SPACES)}")
        if self.target_ratio is not None:
            if self.alpha != "auto":
                raise ValueError("give alpha or target_ratio, not both (the search chooses alpha)")
            if len(self.target_ratio) != self.k:
                raise ValueError(
                    f"target_ratio has {len(self.target_ratio)} parts for k={self.k}; give one per cluster"
                )
            if not all(np.isfinite(r) and r > 0 for r in self.target_ratio):
                raise ValueError(
                    f"target_ratio parts must be positive numbers, got {self.target_ratio}"
                )
        if self.sweep is not None:
            sweep_alphas(self.sweep, 1.0)

    def estimator(self, alpha: float | str) -> Any:
        """An unfitted estimator with these settings at ``alpha``."""
        return EquilibriumKMeans(
            self.k, alpha=alpha, n_init=self.n_init, update=self.update, max_iter=self.max_iter,
            random_state=self.seed,
        )  # fmt: skip


@dataclass(frozen=True)
class Scores(Record):
    """Agreement of a clustering with the true classes."""

    acc: float
    nmi: float
    ari: float


@dataclass(frozen=True)
class AlphaRow(Record):
    """One fit of a sweep or of the target-ratio search."""

    alpha: float
    sizes: tuple[int, ...]
    n_iter: int
    converged: bool
    objective: float
    factor: float | None = None
    scores: Scores | None = None
    mismatch: float | None = None

    def cells(self) -> list[Any]:
        s = self.scores
        return [self.alpha, self.factor, ":".join(map(str, self.sizes)), s and s.acc, s and s.nmi,
                s and s.ari, self.n_iter, self.converged, self.objective, self.mismatch]  # fmt: skip


_ROW_HEADER = [
    "alpha",
    "factor",
    "sizes",
    "acc",
    "nmi",
    "ari",
    "n_iter",
    "converged",
    "objective",
    "mismatch",
]


@dataclass(frozen=True)
class ClusterResult(Record):
    """What :func:`run_cluster` found (``summary.json`` holds exactly this).

    Attributes
    ----------
    features : str
        Where the features came from (``<array>`` for an array).
    n_samples, n_features : int
    k : int
    alpha : float
        The main fit's alpha (searched, automatic or given).
    alpha_setting : str
        ``"auto"``, ``"target-ratio"`` or the number given.
    sizes : tuple of int
        Cluster sizes of the main fit.
    objective, inertia : float
    iterations : int
    converged : bool
    scores : Scores or None
        Against the true classes, when the features carry them.
    target_ratio : tuple of float or None
    mismatch : float or None
        Largest relative deviation of ``sizes`` from ``target_ratio``.
    sweep, search : tuple of AlphaRow
        The sweep's fits and the search's candidates.
    messages : tuple of str
        Distinct warnings of all fits (dead centroids relocated, no convergence).
    n_warnings : int
        How many warnings the fits raised in all.
    n_fits : int
        How many fits ran: the alpha search's candidates, the main fit and the
        sweep's alphas (0 in results written before it was recorded).
    warning_log : tuple of str
        Every warning in the order raised, each as ``<which fits>: <message>``
        (what ``warnings.txt`` holds).
    space : str
    scheduler : str or None
        The Dask scheduler a shard folder was clustered on.
    chunks : int or None
        Chunks of a shard folder.
    files : tuple of Path
        Files written.
    """

    features: str
    n_samples: int
    n_features: int
    k: int
    alpha: float
    alpha_setting: str
    sizes: tuple[int, ...]
    objective: float
    inertia: float
    iterations: int
    converged: bool
    seed: int
    space: str = "raw"
    scores: Scores | None = None
    target_ratio: tuple[float, ...] | None = None
    mismatch: float | None = None
    sweep: tuple[AlphaRow, ...] = ()
    search: tuple[AlphaRow, ...] = ()
    messages: tuple[str, ...] = ()
    n_warnings: int = 0
    n_fits: int = 0
    warning_log: tuple[str, ...] = ()
    scheduler: str | None = None
    chunks: int | None = None
    files: tuple[Path, ...] = field(default=())


def _scores(y: np.ndarray | None, labels: np.ndarray) -> Scores | None:
    if y is None:
        return None
    from aelab.clustering.metrics import clustering_scores

    return Scores(**clustering_scores(y, labels))


class _Warnings:
    """Records the warnings of every fit, so that each is reported once and counted."""

    def __init__(self) -> None:
        self.caught: list[str] = []
        self.log: list[str] = []

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.during("the fit", fn, *args, **kwargs)

    def during(self, stage: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, its warnings recorded as raised during ``stage``."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn(*args, **kwargs)
        messages = [str(w.message) for w in caught]
        self.caught += messages
        self.log += [f"{stage}: {m}" for m in messages]
        return out

    def distinct(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.caught))


def _row(
    r: dict[str, Any], y: np.ndarray | None, ratio: list[float] | None, **extra: Any
) -> AlphaRow:
    """A typed row from one of :func:`aelab.clustering.alpha_sweep`'s rows."""
    from aelab.clustering import ratio_mismatch

    return AlphaRow(
        alpha=float(r["alpha"]), sizes=tuple(r["sizes"]), n_iter=int(r["n_iter"]),
        converged=bool(r["converged"]), objective=float(r["objective"]),
        scores=_scores(y, r["estimator"].labels_),
        mismatch=None if ratio is None else ratio_mismatch(r["sizes"], ratio), **extra,
    )  # fmt: skip


def _options(config: ClusterOptions | None, overrides: dict[str, Any]) -> ClusterOptions:
    if config is None:
        if overrides.get("k") is None:
            raise ValueError("k (the number of clusters) is required")
        from aelab.tasks.options import coerce

        config = ClusterOptions(k=coerce(overrides.pop("k"), int, "k"))
    return with_overrides(config, overrides)


def _read(
    features: PathLike | np.ndarray, opts: ClusterOptions, true_labels: Any, class_names: Any
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, str]:
    """Features, true labels, class names and a name for the source."""
    from aelab.tasks.features import as_matrix, load_latents

    if isinstance(features, str | os.PathLike):
        lat = load_latents(features, key=opts.key, labels_key=opts.labels_key)
        X, y, names, source = lat.X, lat.labels, lat.class_names, os.fspath(features)
    else:
        X = as_matrix(np.asarray(features), Path("<array>"), "the array")
        y, names, source = None, class_names, "<array>"
        if true_labels is not None:
            y = np.asarray(true_labels)
            if y.shape != (X.shape[0],) or y.dtype.kind not in "iu":
                raise ValueError(
                    f"true_labels must be integers of shape ({X.shape[0]},), got {y.dtype} {y.shape}"
                )
    if not np.isfinite(X).all():
        n_nan = int(np.isnan(X).sum())
        n_inf = int(np.isinf(X).sum())
        raise ValueError(
            f"{source}: the features hold {n_nan} NaN and {n_inf} infinite values; "
            "clean or drop those rows"
        )
    if opts.k > X.shape[0]:
        raise ValueError(
            f"k={opts.k} is larger than the number of samples ({X.shape[0]}); lower --k"
        )
    return X, y, names, source


def _figure(Xc: np.ndarray, est: Any, raw_sweep: list[dict[str, Any]], sweep: list[AlphaRow],
            y: Any, names: Any, opts: ClusterOptions, space_note: str) -> Any:  # fmt: skip
    from aelab import viz

    base = float(est.alpha_)
    if sweep:
        return viz.latent_panels(
            Xc, [r["estimator"].labels_ for r in raw_sweep],
            [r["estimator"].cluster_centers_ for r in raw_sweep],
            titles=[f"alpha = {r.factor:.3g} x {base:.3g} = {r.alpha:.3g}" for r in sweep],
            true_labels=y, class_names=names, method=opts.map, random_state=opts.seed,
            suptitle=f"EKM, k={opts.k}, {opts.map} map{space_note}",
        )  # fmt: skip
    return viz.latent_map(
        Xc, est.labels_, est.cluster_centers_, true_labels=y, class_names=names, method=opts.map,
        random_state=opts.seed, title=f"EKM, k={opts.k}, alpha={base:.3g} ({opts.map} map{space_note})",
    )  # fmt: skip


def _check_plot(plot: PathLike) -> Path:
    from aelab.viz import image_format

    try:
        image_format(plot)
    except ValueError as e:
        raise ValueError(f"--plot: {e}") from None
    return Path(plot)


def _write(out: Path, res: ClusterResult, labels: np.ndarray, centroids: np.ndarray) -> list[Path]:
    from aelab.files import write_json, write_npy, write_text

    files = [
        write_csv(out / "labels.csv", ["index", "cluster"], enumerate(labels.tolist())),
        write_npy(out / "centroids.npy", centroids),
    ]
    for name, rows in (("sweep.csv", res.sweep), ("search.csv", res.search)):
        if rows:
            files.append(write_csv(out / name, _ROW_HEADER, (r.cells() for r in rows)))
    if res.warning_log:
        # One warning a line: a message's own line breaks would split it.
        lines = (" ".join(w.split()) for w in res.warning_log)
        files.append(write_text(out / WARNINGS_FILE, "".join(f"{w}\n" for w in lines)))
    summary = out / "summary.json"
    files.append(summary)
    write_json(summary, {**res.to_json(), "files": [str(f) for f in files]})
    return files


def run_cluster(
    features: PathLike | np.ndarray,
    out: PathLike | None = None,
    config: ClusterOptions | None = None,
    *,
    plot: PathLike | None = None,
    scheduler: str | None = None,
    true_labels: Any = None,
    class_names: list[str] | None = None,
    overwrite: bool = False,
    **overrides: Any,
) -> ClusterResult:
    """Cluster a feature matrix with Equilibrium K-Means and optionally write the results.

    Parameters
    ----------
    features : path or array-like of shape (n_samples, n_features)
        A feature file (``.npy``, ``.npz`` from ``aelab embed``, ``.csv``; see
        :func:`~aelab.tasks.features.load_latents`), the matrix itself, or a
        folder of ``.npy`` shards (clustered with Dask, never loaded whole).
    out : path, optional
        Folder for ``labels.csv`` (``index,cluster``), ``centroids.npy`` and
        ``summary.json`` (the result), plus ``sweep.csv``/``search.csv``.
    config : ClusterOptions, optional
        The settings; ``overrides`` (``k=3``, ``alpha="0.5"``...) change fields of it.
    plot : path, optional
        An image file for the map (coloured by cluster, true classes as marker
        shapes, centroids as X), or the sweep's panels.
    scheduler : str, optional
        With a shard folder: a ``dask.distributed`` scheduler address, or
        ``"local"`` for a local cluster of worker processes.
    true_labels, class_names : optional
        True classes and their names for array input.
    overwrite : bool
        Replace earlier outputs.

    Returns
    -------
    ClusterResult
    """
    opts = _options(config, dict(overrides))
    outs = [Path(out)] if out is not None else []
    inputs = [features] if isinstance(features, str | os.PathLike) else []
    plot = None if plot is None else _check_plot(plot)
    with contextlib.ExitStack() as claims:
        for o in outs:
            claims.enter_context(output_folder(o, "cluster", names=OUTPUT_FILES, inputs=inputs,
                                               overwrite=overwrite))  # fmt: skip
        if plot is not None:
            claims.enter_context(output_file(plot, "cluster", inputs=inputs,
                                             overwrite=overwrite, option="--plot"))  # fmt: skip
        return _cluster(features, opts, outs, plot, scheduler, true_labels, class_names)


def _cluster(features: Any, opts: ClusterOptions, outs: list[Path], plot: Path | None,
             scheduler: str | None, true_labels: Any, class_names: Any) -> ClusterResult:  # fmt: skip
    if isinstance(features, str | os.PathLike) and Path(features).is_dir():
        from aelab.tasks.shards import cluster_shards

        if plot is not None or opts.sweep or opts.target_ratio or opts.space != "raw":
            raise ValueError(
                "a folder of shards supports the plain fit only (no sweep, target ratio, plot or space)"
            )
        est, labels, res = cluster_shards(Path(features), opts, scheduler)
        return _finish(res, outs, labels, est.cluster_centers_)
    if scheduler is not None:
        raise ValueError(
            "--scheduler runs on a folder of .npy shards; give the folder instead of a file"
        )
    return _run_in_memory(features, opts, outs, plot, true_labels, class_names)


def _run_in_memory(features: Any, opts: ClusterOptions, outs: list[Path], plot: Path | None,
                   true_labels: Any, class_names: Any) -> ClusterResult:  # fmt: skip
    from aelab.clustering import alpha_sweep, search_alpha
    from aelab.clustering.space import fit_feature_space

    X, y, names, source = _read(features, opts, true_labels, class_names)
    fs = fit_feature_space(X, opts.space, n_components=opts.n_components, random_state=opts.seed)
    Xc = fs.transform(X)
    ekm = {"n_init": opts.n_init, "update": opts.update, "max_iter": opts.max_iter}
    caught, alpha, search = _Warnings(), resolve_alpha(parse_alpha(opts.alpha), Xc), []
    ratio = opts.target_ratio
    if ratio is not None:
        best, rows = caught.during("the alpha search", search_alpha, Xc, opts.k, ratio, y=y,
                                   random_state=opts.seed, **ekm)  # fmt: skip
        alpha, search = best["alpha"], [_row(r, y, ratio) for r in rows]
    est = caught.during("the main fit", opts.estimator(alpha).fit, Xc)
    raw_sweep, sweep = [], []
    if opts.sweep:
        base = float(est.alpha_)
        alphas = sweep_alphas(opts.sweep, base)
        raw_sweep = caught.during("the alpha sweep", alpha_sweep, Xc, opts.k, alphas, y=y,
                                  random_state=opts.seed, **ekm)  # fmt: skip
        sweep = [_row(r, y, ratio, factor=r["alpha"] / base) for r in raw_sweep]
    res = _result(est, est.labels_, opts, source, X.shape, y, caught, fs.kind, search, sweep,
                  "target-ratio" if ratio is not None else str(opts.alpha))  # fmt: skip
    if plot is not None:
        from aelab.viz import save_figure

        note = "" if fs.kind == "raw" else f", {fs.kind} space"
        fig = _figure(Xc, est, raw_sweep, sweep, y, names, opts, note)
        res = _replace_files(res, [save_figure(fig, plot)])
    return _finish(res, outs, est.labels_, est.cluster_centers_)


def _result(est: Any, labels: np.ndarray, opts: ClusterOptions, source: str,
            shape: tuple[int, ...], y: Any, caught: _Warnings, space: str,
            search: list[AlphaRow], sweep: list[AlphaRow], setting: str) -> ClusterResult:  # fmt: skip
    from aelab.clustering import ratio_mismatch

    sizes = tuple(int(v) for v in np.bincount(labels, minlength=opts.k))
    ratio = opts.target_ratio
    return ClusterResult(
        features=source, n_samples=int(shape[0]), n_features=int(shape[1]), k=opts.k,
        alpha=float(est.alpha_), alpha_setting=setting, sizes=sizes,
        objective=float(est.objective_), inertia=float(est.inertia_),
        iterations=int(est.n_iter_), converged=bool(est.converged_), seed=opts.seed, space=space,
        scores=_scores(y, labels), target_ratio=None if ratio is None else tuple(ratio),
        mismatch=None if ratio is None else ratio_mismatch(sizes, ratio),
        sweep=tuple(sweep), search=tuple(search), messages=caught.distinct(),
        n_warnings=len(caught.caught), n_fits=len(search) + 1 + len(sweep),
        warning_log=tuple(caught.log),
    )  # fmt: skip


def _replace_files(res: ClusterResult, files: list[Path]) -> ClusterResult:
    import dataclasses

    return dataclasses.replace(res, files=(*res.files, *files))


def _finish(
    res: ClusterResult, outs: list[Path], labels: Any, centroids: np.ndarray
) -> ClusterResult:
    for out in outs:
        res = _replace_files(res, _write(out, res, np.asarray(labels), centroids))
    return res
