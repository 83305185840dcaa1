"""Reading feature matrices: ``.npy``, ``.npz`` (with labels, class names and ids) or ``.csv``.

:func:`load_features` reads a matrix; :func:`load_latents` also the true
classes, class names and ids that ``aelab embed`` writes beside the latents.
Nothing is unpickled.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FEATURE_SUFFIXES", "Latents", "as_matrix", "load_features", "load_latents"]

FEATURE_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".csv")


def as_matrix(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``arr`` as the estimators take it (:func:`aelab.clustering.as_feature_matrix`), or a
    ValueError naming ``path`` and ``what``."""
    from aelab.clustering import as_feature_matrix

    try:
        return as_feature_matrix(arr)
    except ValueError as e:
        raise ValueError(f"{path}: {what}: {str(e).removeprefix('X ')}") from None


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
            return as_matrix(_read_csv(path), path, "the table")
        if suffix == ".npy":
            with path.open("rb") as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise ValueError(f"{path}: not a .npy file (no NumPy header)")
            return as_matrix(np.load(path, allow_pickle=False), path, "the array")
        with np.load(path, allow_pickle=False) as z:
            names = list(z.files)
            if not names:
                raise ValueError(f"{path}: the archive holds no arrays")
            name = names[0] if key is None else key
            if name not in names:
                raise ValueError(
                    f"{path}: no array named {key!r}; the archive holds {', '.join(names)}"
                )
            return as_matrix(z[name], path, f"array {name!r}")
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
