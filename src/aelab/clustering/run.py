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

from aelab._io import write_json, write_npy, write_text

__all__ = ["ClusterResult", "load_features", "parse_alpha", "run_cluster"]

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
    summary : dict
        What ``summary.json`` holds.
    estimator : EquilibriumKMeans
        The fitted estimator.
    files : list of Path
        Files written (empty without ``out_dir``).
    """

    labels: np.ndarray
    centroids: np.ndarray
    summary: dict[str, Any]
    estimator: Any
    files: list[Path] = field(default_factory=list)


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
    scheduler: str | None = None,
) -> ClusterResult:
    """Cluster a feature matrix with Equilibrium K-Means and optionally write the results.

    Parameters
    ----------
    features : str, Path or array-like of shape (n_samples, n_features)
        A feature file (see :func:`load_features`), a folder of ``.npy``
        shards (see :mod:`aelab.data.shards`; clustered with Dask, never
        loaded whole), or the matrix itself.
    k : int
        Number of clusters, 1 <= k <= n_samples.
    alpha : float or "auto"
    seed : int or None
    out_dir : str, Path or None
        When given, write ``labels.csv`` (``index,cluster``), ``centroids.npy``
        and ``summary.json`` there. Nothing is written when the input is bad.
    key : str or None
        Array name inside a ``.npz``.
    n_init, update, max_iter
        Passed to :class:`~aelab.clustering.EquilibriumKMeans`.
    scheduler : str or None
        With a shard folder: the address of a ``dask.distributed`` scheduler
        (``tcp://host:8786``) to run on, or ``"local"`` for a local cluster of
        worker processes; ``None`` uses Dask's threads in this process.

    Returns
    -------
    ClusterResult
    """
    from aelab.clustering._ekm import _check_finite

    if isinstance(features, (str, Path)) and Path(features).is_dir():
        return _run_cluster_dask(
            Path(features), k, alpha=alpha, seed=seed, out_dir=out_dir, n_init=n_init,
            update=update, max_iter=max_iter, scheduler=scheduler,
        )  # fmt: skip
    if scheduler is not None:
        raise ValueError(
            "--scheduler runs on a folder of .npy shards (e.g. written by `aelab embed "
            "--shard-size`); give the folder instead of a single file"
        )
    source = None
    if isinstance(features, (str, Path)):
        source = str(features)
        X = load_features(features, key=key)
    else:
        X = np.asarray(features)
        X = _as_matrix(X, Path("<array>"), "the array")
    try:
        _check_finite(X, name="the features")
    except ValueError as e:
        raise ValueError(f"{source or '<array>'}: {e}") from None
    est, messages = _fit(X, k, alpha, seed, n_init, update, max_iter)
    return _finish(est, messages, np.asarray(est.labels_), X.shape, X.dtype, source, k, alpha,
                   seed, n_init, update, out_dir)  # fmt: skip


def _fit(X: Any, k: int, alpha: float | str, seed: int | None, n_init: int, update: str,
         max_iter: int) -> tuple[Any, list[str]]:  # fmt: skip
    from aelab.clustering._ekm import EquilibriumKMeans

    if isinstance(alpha, str):
        alpha = parse_alpha(alpha)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k={k!r} must be a positive integer")
    if k > X.shape[0]:
        raise ValueError(f"k={k} is larger than the number of samples ({X.shape[0]}); lower --k")
    est = EquilibriumKMeans(
        k, alpha=alpha, n_init=n_init, update=update, max_iter=max_iter, random_state=seed
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X)
    messages = [str(w.message) for w in caught]
    for msg in messages:  # re-issue so callers still see them
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
    return est, messages


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
    from aelab.data.shards import read_shards

    X = read_shards(directory)
    client = _client(scheduler) if scheduler is not None else None
    try:
        est, messages = _fit(X, k, alpha, seed, n_init, update, max_iter)
        labels = np.asarray(est.labels_.compute())
    finally:
        if client is not None:
            cluster = getattr(client, "cluster", None) if scheduler == "local" else None
            client.close()
            if cluster is not None:
                cluster.close()
    return _finish(est, messages, labels, X.shape, X.dtype, str(directory), k, alpha, seed, n_init,
                   update, out_dir, {"scheduler": scheduler, "chunks": len(X.chunks[0])})  # fmt: skip


def _finish(est: Any, messages: list[str], labels: np.ndarray, shape: tuple[int, ...], dtype: Any, source: str | None,
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
        "k": int(k),
        "alpha": float(est.alpha_),
        "alpha_setting": alpha,
        "seed": seed,
        "n_init": int(n_init),
        "update": update,
        "sizes": [int(s) for s in sizes],
        "objective": float(est.objective_),
        "inertia": float(est.inertia_),
        "iterations": int(est.n_iter_),
        "converged": bool(est.converged_),
        "warnings": messages,
        **(extra or {}),
    }
    files: list[Path] = []
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"--out {out} exists and is not a folder")
        csv = "index,cluster\n" + "".join(f"{i},{c}\n" for i, c in enumerate(labels.tolist()))
        files = [
            write_text(out / "labels.csv", csv),
            write_npy(out / "centroids.npy", est.cluster_centers_),
            write_json(out / "summary.json", summary),
        ]
    return ClusterResult(
        labels=labels, centroids=est.cluster_centers_, summary=summary, estimator=est, files=files
    )
