"""The work behind ``aelab cluster``: read a feature file, fit EKM, write the results.

:func:`load_features` is the public reader for feature files (``aelab embed``
output feeds it); :func:`run_cluster` is the importable work function the
command calls.
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aelab.files import write_json, write_npy, write_text

__all__ = [
    "ClusterResult",
    "Latents",
    "load_features",
    "load_latents",
    "parse_alpha",
    "run_cluster",
    "sweep_table",
]

FEATURE_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".csv")


def _as_matrix(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{path}: {what} has dtype {arr.dtype}; expected numbers (float or int)")
    if arr.ndim != 2:
        raise ValueError(
            f"{path}: {what} has shape {arr.shape}; expected 2 dimensions (n_samples, n_features) "
            f"(reshape it, e.g. X.reshape(len(X), -1))"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{path}: {what} is empty (shape {arr.shape})")
    if arr.dtype.kind != "f" or arr.dtype.itemsize < 4:
        arr = arr.astype(np.float64)
    elif arr.dtype.itemsize > 8:
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def _read_csv(path: Path) -> np.ndarray:
    with path.open("r", encoding="utf-8") as fh:
        first = fh.readline()
    fields = [f.strip() for f in first.split(",")]
    try:
        [float(f) for f in fields]
        skip = 0
    except ValueError:
        skip = 1  # a header row
    try:
        return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise ValueError(f"{path}: not a numeric CSV table ({e})") from None


def load_features(path: str | Path, key: str | None = None) -> np.ndarray:
    """Read a feature matrix from ``.npy``, ``.npz`` or ``.csv``.

    Parameters
    ----------
    path : str or Path
        ``.npy`` (one array), ``.npz`` (the first array, or ``key``) or
        ``.csv`` (comma-separated numbers, an optional header row).
    key : str or None
        Array name inside a ``.npz``.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        float32 stays float32; other numbers become float64.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Unknown suffix, unreadable or pickled content, a missing key, or an
        array that is not a non-empty 2-d numeric table.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise ValueError(
            f"{path}: unsupported feature file type {suffix!r}; use one of {', '.join(FEATURE_SUFFIXES)}"
        )
    if key is not None and suffix != ".npz":
        raise ValueError(f"{path}: --key applies to .npz files only")
    try:
        if suffix == ".csv":
            return _as_matrix(_read_csv(path), path, "the table")
        if suffix == ".npy":
            with path.open("rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise ValueError(f"{path}: not a .npy file (no NumPy header)")
            return _as_matrix(np.load(path, allow_pickle=False), path, "the array")
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if not names:
                raise ValueError(f"{path}: the archive holds no arrays")
            name = names[0] if key is None else key
            if name not in names:
                raise ValueError(
                    f"{path}: no array named {key!r}; the archive holds {', '.join(names)}"
                )
            return _as_matrix(z[name], path, f"array {name!r}")
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as {suffix} ({type(e).__name__}: {e})") from None
    except ValueError as e:
        msg = str(e)
        if msg.startswith(str(path)):
            raise
        raise ValueError(f"{path}: cannot read it as {suffix} ({msg})") from None


_NO_LABELS = ("", "none")


@dataclass
class Latents:
    """A feature matrix with what else its file knows about the samples.

    Attributes
    ----------
    X : ndarray of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,) or None
        True classes (int64), when the file holds them.
    class_names : list of str or None
    ids : list of str or None
        Sample ids (``aelab embed`` writes them).
    key : str or None
        The array ``X`` was read from (``.npz`` only).
    labels_key : str or None
        The array ``labels`` was read from.
    """

    X: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    ids: list[str] | None = None
    key: str | None = None
    labels_key: str | None = None


def load_latents(
    path: str | Path, key: str | None = None, labels_key: str | None = None
) -> Latents:
    """Read features and, from an ``.npz``, the true classes, class names and ids.

    An ``.npz`` written by ``aelab embed`` holds ``z``, ``ids`` and, for
    labeled data, ``labels`` and ``class_names``: by default ``z`` is the
    feature matrix and ``labels`` the true classes.

    Parameters
    ----------
    path : str or Path
        ``.npy``, ``.npz`` or ``.csv`` (see :func:`load_features`).
    key : str or None
        Features array of an ``.npz``; default ``z`` when present, else the
        first array.
    labels_key : str or None
        Labels array of an ``.npz``; default ``labels`` when present.
        ``"none"`` (or ``""``) ignores labels.

    Returns
    -------
    Latents
    """
    path = Path(path)
    no_labels = labels_key is not None and labels_key.strip().lower() in _NO_LABELS
    if path.suffix.lower() != ".npz":
        if labels_key is not None and not no_labels:
            raise ValueError(f"{path}: --labels-key applies to .npz files only")
        return Latents(X=load_features(path, key=key))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise ValueError(f"{path}: cannot read it as .npz ({type(e).__name__}: {e})") from None
    if key is None and "z" in names:
        key = "z"
    X = load_features(path, key=key)
    out = Latents(X=X, key=key or (names[0] if names else None))
    with np.load(path, allow_pickle=False) as z:
        if not no_labels:
            lk = labels_key if labels_key is not None else ("labels" if "labels" in names else None)
            if lk is not None:
                if lk not in names:
                    raise ValueError(
                        f"{path}: no array named {lk!r} for the labels; the archive holds "
                        f"{', '.join(names)} (or give --labels-key none)"
                    )
                y = z[lk]
                if y.ndim != 1 or len(y) != len(X):
                    raise ValueError(
                        f"{path}: labels {lk!r} have shape {y.shape}; expected ({len(X)},), one per row of the features"
                    )
                if y.dtype.kind not in "iu" or (y < 0).any():
                    raise ValueError(
                        f"{path}: labels {lk!r} must be non-negative integers, got {y.dtype}"
                    )
                out.labels, out.labels_key = y.astype(np.int64), lk
                if "class_names" in names:
                    cn = z["class_names"]
                    if cn.dtype.kind == "U" and cn.ndim == 1 and len(cn) > int(y.max(initial=0)):
                        out.class_names = [str(c) for c in cn]
        if "ids" in names and z["ids"].ndim == 1 and len(z["ids"]) == len(X):
            out.ids = [str(i) for i in z["ids"]]
    return out


def _fit_recording_warnings(est: Any, X: np.ndarray, *, stacklevel: int) -> list[str]:
    """Fit ``est`` on ``X``; return its warnings' messages (for summary.json) and re-issue them.

    ``stacklevel`` is counted from the function that calls this one, so the
    re-issued warnings point where they would have without the recording.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X)
    messages = [str(w.message) for w in caught]
    for msg in messages:
        warnings.warn(msg, RuntimeWarning, stacklevel=stacklevel + 1)
    return messages


def _check_k_alpha(k: Any, alpha: float | str, n_samples: int) -> float | str:
    """Validate ``k`` against ``n_samples`` and parse a textual ``alpha`` (see :func:`parse_alpha`)."""
    if isinstance(alpha, str):
        alpha = parse_alpha(alpha)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer")
    if k > n_samples:
        raise ValueError(f"k={k} is larger than the number of samples ({n_samples}); lower --k")
    return alpha


def parse_alpha(value: str | float) -> float | str:
    """``"auto"`` or a positive finite float, from a command-line string."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--alpha {value!r} is neither 'auto' nor a number") from None
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"--alpha {value!r} must be a positive finite number or 'auto'")
    return alpha


@dataclass
class ClusterResult:
    """What :func:`run_cluster` produced.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,)
    centroids : ndarray of shape (n_clusters, n_features)
        In the clustering space (see ``space`` of :func:`run_cluster`).
    summary : dict
        What ``summary.json`` holds.
    estimator : EquilibriumKMeans
        The fitted estimator.
    files : list of Path
        Files written (empty without ``out_dir`` or ``plot``).
    sweep : list of dict
        One row per alpha of the sweep (see :func:`~aelab.clustering.alpha_sweep`),
        empty without one.
    search : list of dict
        Every alpha tried by the ``target_ratio`` search, empty without one.
    figure : matplotlib Figure or None
        The map (or the sweep's panels) when ``plot`` was given.
    """

    labels: np.ndarray
    centroids: np.ndarray
    summary: dict[str, Any]
    estimator: Any
    files: list[Path] = field(default_factory=list)
    sweep: list[dict[str, Any]] = field(default_factory=list)
    search: list[dict[str, Any]] = field(default_factory=list)
    figure: Any = None


def _scores(y: np.ndarray | None, labels: np.ndarray) -> dict[str, float]:
    if y is None:
        return {}
    from aelab.clustering.metrics import clustering_scores

    return clustering_scores(y, labels)


def _csv_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.6g}"
        return str(v)

    return ",".join(header) + "\n" + "".join(",".join(cell(v) for v in r) + "\n" for r in rows)


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """The ``sweep.csv`` text of :func:`alpha_sweep` rows (cluster sizes joined by ``:``)."""
    header = ["alpha", "factor", "sizes", "acc", "nmi", "ari", "n_iter", "converged", "objective"]
    if any("mismatch" in r for r in rows):
        header.append("mismatch")
    body = []
    for r in rows:
        line = [r["alpha"], r.get("factor"), ":".join(map(str, r["sizes"])), r.get("acc"),
                r.get("nmi"), r.get("ari"), r["n_iter"], r["converged"], r["objective"]]  # fmt: skip
        if "mismatch" in header:
            line.append(r.get("mismatch"))
        body.append(line)
    return _csv_table(header, body)


def run_cluster(
    features: str | Path | np.ndarray,
    k: int,
    *,
    alpha: float | str = "auto",
    seed: int | None = 0,
    out_dir: str | Path | None = None,
    key: str | None = None,
    n_init: int = 10,
    update: str = "damped",
    max_iter: int = 300,
    labels_key: str | None = None,
    true_labels: np.ndarray | None = None,
    class_names: list[str] | None = None,
    space: str = "raw",
    n_components: int = 32,
    target_ratio: list[float] | None = None,
    sweep: str | list[float] | None = None,
    plot: str | Path | None = None,
    map_method: str = "tsne",
    scheduler: str | None = None,
) -> ClusterResult:
    """Cluster a feature matrix with Equilibrium K-Means and optionally write the results.

    Parameters
    ----------
    features : str, Path or array-like of shape (n_samples, n_features)
        A feature file (see :func:`load_latents`) or the matrix itself.
    k : int
        Number of clusters, 1 <= k <= n_samples.
    alpha : float or "auto"
        The alpha of the main fit, and the base of a sweep's multiples.
    seed : int or None
    out_dir : str, Path or None
        When given, write ``labels.csv`` (``index,cluster``), ``centroids.npy``
        and ``summary.json`` there, plus ``sweep.csv`` with ``sweep`` and
        ``search.csv`` with ``target_ratio``. Nothing is written when the input is bad.
    key : str or None
        Features array inside a ``.npz`` (default ``z`` when present).
    n_init, update, max_iter
        Passed to :class:`~aelab.clustering.EquilibriumKMeans`.
    labels_key : str or None
        Labels array inside a ``.npz`` (default ``labels`` when present;
        ``"none"`` ignores them). Labels add accuracy, NMI and ARI to the
        summary and marker shapes to the map.
    true_labels : array-like of shape (n_samples,), optional
        True classes for array input (a file's own labels take precedence otherwise).
    class_names : list of str, optional
        Names of the true classes for array input.
    space : {"raw", "l2", "pca", "l2-pca"}
        Clustering space (see :mod:`aelab.clustering.space`); centroids,
        alpha and the map are in that space.
    n_components : int
        Dimensions kept by the PCA spaces.
    target_ratio : list of float, optional
        Search alpha for cluster sizes closest to this ratio (e.g. ``[2, 1, 1]``,
        sizes compared largest first); the best alpha becomes the main fit's.
        Needs ``alpha="auto"``.
    sweep : str or list of float, optional
        Alphas to compare: ``"0.1x,1x,10x"`` (multiples of the main alpha) or
        absolute values. Adds ``sweep`` rows and, with ``plot``, one panel per alpha.
    plot : str or Path, optional
        Write the figure here: a map coloured by cluster with centroids and
        true classes, or the sweep's panels.
    map_method : {"tsne", "umap", "pca"}
        How the map is made (:func:`aelab.viz.embed_2d`).
    scheduler : str or None
        With a folder of ``.npy`` shards (see :mod:`aelab.data.shards`; clustered
        with Dask, never loaded whole): the address of a ``dask.distributed``
        scheduler (``tcp://host:8786``), or ``"local"`` for a local cluster of
        worker processes; ``None`` uses Dask's threads in this process. The
        shard path supports the plain fit only (no sweep, plot or space).

    Returns
    -------
    ClusterResult
    """
    from aelab.clustering._ekm import EquilibriumKMeans, _check_finite
    from aelab.clustering.space import fit_feature_space
    from aelab.clustering.sweep import alpha_sweep, parse_alpha_list, ratio_mismatch, search_alpha

    if isinstance(features, (str, Path)) and Path(features).is_dir():
        if any(v is not None for v in (target_ratio, sweep, plot)) or space != "raw":
            raise ValueError(
                "a folder of shards supports the plain fit only (no sweep, target ratio, plot or space)"
            )
        return _run_cluster_dask(
            Path(features), k, alpha=alpha, seed=seed, out_dir=out_dir, n_init=n_init,
            update=update, max_iter=max_iter, scheduler=scheduler,
        )  # fmt: skip
    if scheduler is not None:
        raise ValueError(
            "--scheduler runs on a folder of .npy shards (e.g. written by aelab.data.shards.ShardWriter); "
            "give the folder instead of a single file"
        )
    source = None
    if isinstance(features, (str, Path)):
        source = str(features)
        lat = load_latents(features, key=key, labels_key=labels_key)
        X, y, names = lat.X, lat.labels, lat.class_names
    else:
        X = np.asarray(features)
        X = _as_matrix(X, Path("<array>"), "the array")
        y, names = None, class_names
        if true_labels is not None:
            y = np.asarray(true_labels)
            if y.shape != (X.shape[0],) or y.dtype.kind not in "iu":
                raise ValueError(
                    f"true_labels must be integers of shape ({X.shape[0]},), got {y.dtype} {y.shape}"
                )
    try:
        _check_finite(X, name="the features")
    except ValueError as e:
        raise ValueError(f"{source or '<array>'}: {e}") from None
    alpha = _check_k_alpha(k, alpha, X.shape[0])
    if target_ratio is not None:
        if alpha != "auto":
            raise ValueError("give --alpha or --target-ratio, not both (the search chooses alpha)")
        if len(target_ratio) != k:
            raise ValueError(
                f"--target-ratio has {len(target_ratio)} parts for --k {k}; give one per cluster"
            )
    sweep_items = parse_alpha_list(sweep) if isinstance(sweep, str) else (
        None if sweep is None else [("abs", float(a)) for a in sweep]
    )  # fmt: skip
    if sweep_items is not None and not sweep_items:
        raise ValueError("the alpha sweep is empty; give e.g. 0.1x,1x,10x")
    if map_method not in ("tsne", "umap", "pca"):
        raise ValueError(f"unknown map {map_method!r}; choose tsne, umap or pca")
    if plot is not None:
        from aelab.viz._figure import _new_figure

        fmt = Path(plot).suffix.lstrip(".").lower()
        if fmt not in _new_figure((1, 1)).canvas.get_supported_filetypes():
            raise ValueError(f"--plot {plot}: end the file name with an image suffix such as .png")

    fs = fit_feature_space(X, space, n_components=n_components, random_state=seed or 0)
    Xc = fs.transform(X)
    ekm_kw = {"n_init": n_init, "update": update, "max_iter": max_iter}
    rs = 0 if seed is None else seed
    search_rows: list[dict[str, Any]] = []
    if target_ratio is not None:
        # Far-off candidates warn (dead centroids, slow convergence); the table
        # shows their sizes, so the warnings are counted rather than printed.
        with warnings.catch_warnings(record=True) as caught_search:
            warnings.simplefilter("always")
            best, search_rows = search_alpha(Xc, k, target_ratio, y=y, random_state=rs, **ekm_kw)
        alpha = best["alpha"]

    est = EquilibriumKMeans(k, alpha=alpha, random_state=seed, **ekm_kw)
    messages = _fit_recording_warnings(est, Xc, stacklevel=2)

    labels = est.labels_
    sizes = np.bincount(labels, minlength=k)
    summary: dict[str, Any] = {
        "features": source,
        "n_samples": int(X.shape[0]),
        "n_features": int(X.shape[1]),
        "dtype": str(X.dtype),
        "space": fs.to_dict(),
        **_fit_summary(
            est,
            sizes,
            "target-ratio" if target_ratio is not None else alpha,
            seed,
            n_init,
            update,
            messages,
        ),
        **_scores(y, labels),
    }
    if target_ratio is not None:
        summary["target_ratio"] = [float(r) for r in target_ratio]
        summary["mismatch"] = ratio_mismatch(sizes, target_ratio)
        summary["search_warnings"] = len(caught_search)

    sweep_rows: list[dict[str, Any]] = []
    if sweep_items is not None:
        base = float(est.alpha_)
        alphas = [v * base if kind == "x" else v for kind, v in sweep_items]
        with warnings.catch_warnings(record=True) as caught_sweep:
            warnings.simplefilter("always")
            sweep_rows = alpha_sweep(Xc, k, alphas, y=y, random_state=rs, **ekm_kw)
        summary["sweep_warnings"] = sorted({str(w.message) for w in caught_sweep})
        for r, (kind, v) in zip(sweep_rows, sweep_items, strict=True):
            r["factor"] = v if kind == "x" else r["alpha"] / base
            r.update(_scores(y, r["estimator"].labels_))
            if target_ratio is not None:
                r["mismatch"] = ratio_mismatch(r["sizes"], target_ratio)
        summary["sweep"] = [{kk: v for kk, v in r.items() if kk != "estimator"} for r in sweep_rows]
    for r in search_rows:
        r.update(_scores(y, r["estimator"].labels_))

    figure = None
    if plot is not None:
        from aelab import viz

        space_note = "" if fs.kind == "raw" else f", {fs.kind} space"
        if sweep_rows:
            figure = viz.latent_panels(
                Xc, [r["estimator"].labels_ for r in sweep_rows],
                [r["estimator"].cluster_centers_ for r in sweep_rows],
                titles=[f"alpha = {r['factor']:.3g} x {float(est.alpha_):.3g} = {r['alpha']:.3g}" for r in sweep_rows],
                true_labels=y, class_names=names, method=map_method, random_state=rs,
                suptitle=f"EKM, k={k}, {map_method} map{space_note}",
            )  # fmt: skip
        else:
            figure = viz.latent_map(
                Xc, labels, est.cluster_centers_, true_labels=y, class_names=names,
                method=map_method, random_state=rs,
                title=f"EKM, k={k}, alpha={float(est.alpha_):.3g} ({map_method} map{space_note})",
            )  # fmt: skip

    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        files = _write_core(out, labels, est.cluster_centers_, summary)
        if sweep_rows:
            files.append(write_text(out / "sweep.csv", sweep_table(sweep_rows)))
        if search_rows:
            files.append(write_text(out / "search.csv", sweep_table(search_rows)))
    if figure is not None:
        from aelab.viz import save_figure

        files.append(save_figure(figure, plot, close=False))
    return ClusterResult(
        labels=labels, centroids=est.cluster_centers_, summary=summary, estimator=est,
        files=files, sweep=sweep_rows, search=search_rows, figure=figure,
    )  # fmt: skip


def _fit_summary(est: Any, sizes: np.ndarray, alpha_setting: Any, seed: int | None, n_init: int,
                 update: str, messages: list[str]) -> dict[str, Any]:  # fmt: skip
    """The summary entries every fit reports, whatever its input."""
    return {
        "k": len(sizes),
        "alpha": float(est.alpha_),
        "alpha_setting": alpha_setting,
        "seed": seed,
        "n_init": int(n_init),
        "update": update,
        "sizes": [int(v) for v in sizes],
        "objective": float(est.objective_),
        "inertia": float(est.inertia_),
        "iterations": int(est.n_iter_),
        "converged": bool(est.converged_),
        "warnings": messages,
    }


def _write_core(
    out: Path, labels: np.ndarray, centroids: np.ndarray, summary: dict[str, Any]
) -> list[Path]:
    """``labels.csv`` (index,cluster), ``centroids.npy`` and ``summary.json`` in ``out``."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    csv = "index,cluster\n" + "".join(f"{i},{c}\n" for i, c in enumerate(labels.tolist()))
    return [
        write_text(out / "labels.csv", csv),
        write_npy(out / "centroids.npy", centroids),
        write_json(out / "summary.json", summary),
    ]


def _fit_plain(X: Any, k: int, alpha: float | str, seed: int | None, n_init: int, update: str,
         max_iter: int) -> tuple[Any, list[str]]:  # fmt: skip
    from aelab.clustering._ekm import EquilibriumKMeans

    alpha = _check_k_alpha(k, alpha, X.shape[0])
    est = EquilibriumKMeans(
        k, alpha=alpha, n_init=n_init, update=update, max_iter=max_iter, random_state=seed
    )
    return est, _fit_recording_warnings(est, X, stacklevel=3)


def _client(scheduler: str) -> Any:
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "--scheduler needs the dask.distributed package: pip install 'aelab[dask]' "
            "(or pip install distributed)"
        ) from None
    if scheduler == "local":
        return Client(LocalCluster(processes=True))
    try:
        return Client(scheduler, timeout="30s")
    except OSError as e:
        raise ValueError(
            f"cannot reach the Dask scheduler at {scheduler!r} ({e}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or use --scheduler local"
        ) from None


def _run_cluster_dask(directory: Path, k: int, *, alpha: float | str, seed: int | None,
                      out_dir: str | Path | None, n_init: int, update: str, max_iter: int,
                      scheduler: str | None) -> ClusterResult:  # fmt: skip
    """:func:`run_cluster` on a folder of shards, with Dask (optionally on a cluster)."""
    from aelab.data.shards import read_shards, shard_column

    X = read_shards(directory)
    # Labels are one integer a row: small enough to score the clustering against.
    y = shard_column(directory, "labels")
    client = _client(scheduler) if scheduler is not None else None
    try:
        est, messages = _fit_plain(X, k, alpha, seed, n_init, update, max_iter)
        labels = np.asarray(est.labels_.compute())
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None) if scheduler == "local" else None
            client.close()
            if cluster is not None:
                cluster.close()
    return _finish_plain(est, messages, labels, X.shape, X.dtype, str(directory), k, alpha, seed, n_init,
                   update, out_dir, {"scheduler": scheduler, "chunks": len(X.chunks[0]),
                                     **_scores(y, labels)})  # fmt: skip


def _finish_plain(est: Any, messages: list[str], labels: np.ndarray, shape: tuple[int, ...], dtype: Any, source: str | None,
            k: int, alpha: float | str, seed: int | None, n_init: int, update: str,
            out_dir: str | Path | None, extra: dict[str, Any] | None = None) -> ClusterResult:  # fmt: skip
    X_shape = shape
    if isinstance(alpha, str):
        alpha = parse_alpha(alpha)
    sizes = np.bincount(labels, minlength=k)
    summary: dict[str, Any] = {
        "features": source,
        "n_samples": int(X_shape[0]),
        "n_features": int(X_shape[1]),
        "dtype": str(np.dtype(dtype)),
        **_fit_summary(est, sizes, alpha, seed, n_init, update, messages),
        **(extra or {}),
    }
    files: list[Path] = []
    if out_dir is not None:
        files = _write_core(Path(out_dir), labels, est.cluster_centers_, summary)
    return ClusterResult(
        labels=labels, centroids=est.cluster_centers_, summary=summary, estimator=est, files=files
    )
