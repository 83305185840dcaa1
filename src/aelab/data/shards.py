"""Feature matrices too large for one file: a folder of ``.npy`` shards plus a manifest.

Layout written by :class:`ShardWriter` (``aelab embed DATA --out FOLDER``)::

    latents/
      z-00000.npy       rows 0 .. shard_size-1, float32 (n_rows, n_features)
      z-00001.npy       ...
      ids-00000.npy     the rows' ids (fixed-width unicode, no pickle), optional
      labels-00000.npy  int64 labels, optional
      manifest.json     written last: format, n_samples, n_features, dtype, shards

Every file is written atomically and ``manifest.json`` last, so a folder with
the writer's ``z-00000.npy`` files but no manifest is an interrupted write and
is refused. :func:`read_shards` returns a lazy ``dask.array`` with one chunk per
shard (each task memory-maps its own file), which
:class:`aelab.clustering.EquilibriumKMeans` fits without gathering;
:func:`load_shards` reads everything into memory for small sets. A folder of
plain ``.npy`` files without a manifest (same width and dtype, read in sorted
name order, not named like the writer's shards) is accepted too.

Choosing ``shard_size``: one shard is one Dask chunk, i.e. what one worker
holds at a time, and the writer buffers one shard. The default (``None``)
aims at about 128 MiB per shard (e.g. 524 288 rows of 64 float32 features,
32 768 rows of 1024): large enough that per-task overhead (about 1 ms) is
negligible next to the work, small enough for several chunks per worker core.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from aelab.files import read_json, write_json, write_npy

__all__ = [
    "MANIFEST",
    "SHARD_FORMAT",
    "ShardWriter",
    "load_shards",
    "read_shards",
    "shard_column",
    "shard_files",
]

MANIFEST = "manifest.json"
SHARD_FORMAT = "aelab.shards/1"
_TARGET_SHARD_BYTES = 128 << 20
#: Feature shards as :class:`ShardWriter` names them.
_WRITER_GLOB = "z-[0-9][0-9][0-9][0-9][0-9].npy"


def default_shard_size(n_features: int, itemsize: int = 4) -> int:
    """Rows per shard for about 128 MiB of features (at least 1024)."""
    return max(1024, _TARGET_SHARD_BYTES // max(1, n_features * itemsize))


class ShardWriter:
    """Append rows of a feature matrix to a folder of ``.npy`` shards.

    Parameters
    ----------
    directory : str or path
        Output folder (created). It must not already hold a manifest unless
        ``overwrite``.
    shard_size : int, optional
        Rows per shard; ``None`` picks about 128 MiB per shard from the width
        of the first rows written.
    dtype : numpy dtype
        Stored dtype of the features (float32 by default).
    overwrite : bool
        Replace the shards of an earlier write.

    Examples
    --------
    >>> with ShardWriter(out / "latents") as w:          # doctest: +SKIP
    ...     for z, ids in batches:
    ...         w.write(z, ids=ids)
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        shard_size: int | None = None,
        dtype: Any = np.float32,
        overwrite: bool = False,
    ) -> None:
        if shard_size is not None and (isinstance(shard_size, bool) or shard_size < 1):
            raise ValueError(f"shard_size must be a positive number of rows, got {shard_size!r}")
        self.directory = Path(directory)
        if (self.directory / MANIFEST).exists() and not overwrite:
            raise ValueError(
                f"{self.directory} already holds shards ({MANIFEST}); choose another folder "
                "or overwrite"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for p in self.directory.glob("*-[0-9][0-9][0-9][0-9][0-9].npy"):
                p.unlink()
            (self.directory / MANIFEST).unlink(missing_ok=True)
        self.shard_size = shard_size
        self.dtype = np.dtype(dtype)
        self._z: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._buffered = 0
        self._shards: list[dict[str, Any]] = []
        self._n_features: int | None = None
        self._has_ids: bool | None = None
        self._has_labels: bool | None = None
        self.n_samples = 0
        self._closed = False

    def write(
        self,
        z: np.ndarray,
        *,
        ids: list[str] | np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> None:
        """Append rows ``z`` of shape (n_rows, n_features), with their ids and labels.

        Every call must give ids (and labels) if the first did.
        """
        if self._closed:
            raise ValueError("this ShardWriter is closed")
        z = np.asarray(z)
        if z.ndim != 2 or z.dtype.kind not in "fiu":
            raise ValueError(f"z must be a 2-D numeric array, got {z.dtype} of shape {z.shape}")
        if self._n_features is None:
            self._n_features = int(z.shape[1])
            self._has_ids, self._has_labels = ids is not None, labels is not None
            if self.shard_size is None:
                self.shard_size = default_shard_size(self._n_features, self.dtype.itemsize)
        if z.shape[1] != self._n_features:
            raise ValueError(f"z has {z.shape[1]} features, earlier rows had {self._n_features}")
        if (ids is not None) != self._has_ids or (labels is not None) != self._has_labels:
            raise ValueError("give ids and labels with every write, or with none")
        self._z.append(z.astype(self.dtype, copy=False))
        if ids is not None:
            ids = np.asarray(ids, dtype=str)
            if ids.shape != (len(z),):
                raise ValueError(f"{ids.shape[0]} ids for {len(z)} rows")
            self._ids.append(ids)
        if labels is not None:
            labels = np.asarray(labels, dtype=np.int64)
            if labels.shape != (len(z),):
                raise ValueError(f"{labels.shape[0]} labels for {len(z)} rows")
            self._labels.append(labels)
        self._buffered += len(z)
        assert self.shard_size is not None
        while self._buffered >= self.shard_size:
            self._flush(self.shard_size)

    def _take(self, parts: list[np.ndarray], n: int) -> np.ndarray:
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        parts[:] = [out[n:]] if len(out) > n else []
        return out[:n]

    def _flush(self, n: int) -> None:
        i = len(self._shards)
        entry: dict[str, Any] = {"rows": n, "z": f"z-{i:05d}.npy"}
        write_npy(self.directory / entry["z"], np.ascontiguousarray(self._take(self._z, n)))
        if self._has_ids:
            entry["ids"] = f"ids-{i:05d}.npy"
            write_npy(self.directory / entry["ids"], self._take(self._ids, n))
        if self._has_labels:
            entry["labels"] = f"labels-{i:05d}.npy"
            write_npy(self.directory / entry["labels"], self._take(self._labels, n))
        self._shards.append(entry)
        self._buffered -= n
        self.n_samples += n

    def close(self, *, class_names: list[str] | None = None) -> Path:
        """Write the last shard and the manifest; returns the manifest's path."""
        if self._closed:
            return self.directory / MANIFEST
        if self._buffered:
            self._flush(self._buffered)
        if not self._shards:
            raise ValueError("no rows were written; nothing to close")
        self._closed = True
        return write_json(
            self.directory / MANIFEST,
            {
                "format": SHARD_FORMAT,
                "n_samples": self.n_samples,
                "n_features": self._n_features,
                "dtype": self.dtype.str,
                "shard_size": self.shard_size,
                "class_names": class_names,
                "shards": self._shards,
            },
        )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # On an error the folder keeps no manifest, so it cannot be mistaken for a whole set.
        if exc_type is None:
            self.close()


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path}: not a plain numeric .npy file ({e})") from None
    return tuple(arr.shape), arr.dtype


def shard_files(directory: str | os.PathLike[str]) -> tuple[list[Path], list[int], int, np.dtype]:
    """The feature shards of ``directory``: ``(paths, rows per shard, n_features, dtype)``.

    Uses ``manifest.json`` when present (checking each file against it), else
    every ``*.npy`` file in sorted name order.

    Raises
    ------
    ValueError
        No shards, shards of different widths or dtypes, or files that do not
        match the manifest.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ValueError(f"{d}: not a folder of .npy shards")
    manifest = d / MANIFEST
    if manifest.is_file():
        meta = read_json(manifest)
        if not isinstance(meta, dict) or meta.get("format") != SHARD_FORMAT:
            raise ValueError(f"{manifest}: not an aelab shard manifest ({SHARD_FORMAT})")
        paths = [d / s["z"] for s in meta["shards"]]
        rows = [int(s["rows"]) for s in meta["shards"]]
    else:
        if any(d.glob(_WRITER_GLOB)):
            raise ValueError(
                f"{d}: holds shards named as ShardWriter names them (z-00000.npy, ...) but no "
                f"{MANIFEST}, which is written last: the write was interrupted and the set may "
                "be incomplete; write it again (e.g. aelab embed ... --out FOLDER --overwrite)"
            )
        paths = sorted(
            p for p in d.glob("*.npy") if not p.name.startswith((".", "ids-", "labels-"))
        )
        rows = []
        if not paths:
            raise ValueError(f"{d}: no .npy shards (and no {MANIFEST})")
    width: int | None = None
    dtype: np.dtype | None = None
    for i, p in enumerate(paths):
        if not p.is_file():
            raise ValueError(f"{p}: listed in {MANIFEST} but missing; the set is incomplete")
        shape, dt = _npy_header(p)
        if len(shape) != 2 or dt.kind not in "fiu":
            raise ValueError(f"{p}: shape {shape} dtype {dt}; shards must be 2-D numeric arrays")
        if width is None:
            width, dtype = shape[1], dt
        elif shape[1] != width or dt != dtype:
            raise ValueError(
                f"{p}: {shape[1]} features of {dt}, but {paths[0].name} has {width} of {dtype}; "
                "every shard must have the same width and dtype"
            )
        if manifest.is_file():
            if shape[0] != rows[i]:
                raise ValueError(f"{p}: {shape[0]} rows, {MANIFEST} says {rows[i]}")
        else:
            rows.append(shape[0])
    assert width is not None and dtype is not None
    return paths, rows, width, dtype


def _load_shard(path: str, dtype: str) -> np.ndarray:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
    return np.ascontiguousarray(arr, dtype=np.dtype(dtype))


def read_shards(directory: str | os.PathLike[str]) -> Any:
    """The shards of ``directory`` as one lazy ``dask.array`` (one chunk per shard).

    Integer shards become float64; float32 stays float32. Each chunk is read
    by the task that needs it (workers of a distributed cluster must see
    ``directory`` at the same path).

    Returns
    -------
    dask.array.Array of shape (n_samples, n_features)
    """
    import dask
    import dask.array as da

    paths, rows, width, dtype = shard_files(directory)
    out = np.dtype(np.float64) if dtype.kind != "f" or dtype.itemsize > 8 else dtype
    if out == np.float16:
        out = np.dtype(np.float32)
    blocks = [
        da.from_delayed(
            dask.delayed(_load_shard, pure=True)(str(p), out.str), shape=(n, width), dtype=out
        )
        for p, n in zip(paths, rows, strict=True)
    ]
    return da.concatenate(blocks, axis=0)


def shard_column(directory: str | os.PathLike[str], key: str) -> np.ndarray | None:
    """Every row's ``ids`` or ``labels``, in row order, when the manifest lists them.

    Returns ``None`` for a folder without a manifest or a set written without them.
    """
    if key not in ("ids", "labels"):
        raise ValueError(f"key must be 'ids' or 'labels', got {key!r}")
    d = Path(directory)
    if not (d / MANIFEST).is_file():
        return None
    shards = read_json(d / MANIFEST)["shards"]
    if not shards or not all(key in s for s in shards):
        return None
    return np.concatenate([np.load(d / s[key], allow_pickle=False) for s in shards])


def load_shards(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything in a shard folder, in memory: ``z``, and ``ids``/``labels``/``class_names``
    when the manifest lists them (for small sets and tests)."""
    d = Path(directory)
    paths, _, _, _ = shard_files(d)
    out: dict[str, Any] = {"z": np.concatenate([np.load(p, allow_pickle=False) for p in paths])}
    if (d / MANIFEST).is_file():
        for key in ("ids", "labels"):
            column = shard_column(d, key)
            if column is not None:
                out[key] = column
        out["class_names"] = read_json(d / MANIFEST).get("class_names")
    return out
