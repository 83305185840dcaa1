"""Read ``.npy`` / ``.npz`` image arrays (and label files) into an :class:`ImageDataset`.

Accepted arrays: shape (N, H, W) (grayscale) or (N, H, W, C) with C in
{1, 2, 3, 4} (an alpha channel is dropped); (N, C, H, W) is also recognised
when C is 1-4 and the last axis is not. Values: uint8, or floats in [0, 1]
(scaled by 255 and rounded), or other integers within [0, 255].

A ``.npy`` file is opened as a memory map: a uint8 array that needs no
conversion is used in place (the dataset's images are a view of the file and
only the rows a batch touches are read); anything else is converted a chunk at
a time into an in-memory uint8 array, at most the size of the result.
A ``.npz`` file is a zip archive and is always read into memory (the content
decides, not the suffix). Its members are read by name: the images are
``images`` (or ``x``, or ``images_<split>``/``x_<split>`` such as ``x_train``),
the optional labels ``labels`` (or ``y``, ``labels_<split>``, ``y_<split>``) and
class names ``class_names``; an archive without an images member is refused,
naming the members it holds. Nothing is unpickled: ``np.load(..., allow_pickle=False)``
throughout, and a damaged file is a ``ValueError`` naming it.

Labels (an ``.npz``'s ``labels``/``y``, or a ``.npy``/``.csv`` labels file) are
one per image: whole, non-negative numbers (booleans count as 0/1; a column of
shape (N, 1) is taken as (N,)), or strings, which become sorted class names.
With class names every label must be below their count. Without them the
classes are numbered 0..max label, and at least half of those numbers must
occur as labels: a test set missing a class or two loads as usual, but one stray
``99`` among labels 0-9 is refused (it would make a 100-class problem) with a
message saying to give class names or renumber the labels 0..K-1.
Training a classifier asks more (:func:`aelab.data.check_classes`): there the
classes are the names given or else exactly the labels that occur, 0..K-1, and
at least two of them; the looser rule here lets data to evaluate lack a class.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from aelab.data.dataset import ImageDataset, RowIds
from aelab.data.transforms import _check_fits, _conform_uint8
from aelab.runtime import progress_bars

IMAGE_KEYS = ("images", "x")
LABEL_KEYS = ("labels", "y")
_LABEL_HEADER_NAMES = ("label", "labels", "y", "class", "target")
_KNOWN_HEADER_CELLS = frozenset({*_LABEL_HEADER_NAMES, "id", "file", "filename", "path"})
_CHUNK = 1024
_PROGRESS_MIN_ROWS = 20_000


def _reason(e: BaseException) -> str:
    """An exception as one short line for a message (numpy's can span lines)."""
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _np_load(path: Path, **kwargs: object) -> object:
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(
                f"{path}: holds Python objects (needs pickle), which aelab refuses to load; "
                "save a plain numeric array with np.save"
            ) from None
        raise ValueError(f"{path}: not a valid NumPy file ({_reason(e)})") from None
    except Exception as e:
        # A damaged file makes numpy's header parser or zipfile raise nearly anything
        # (EOFError, BadZipFile, NotImplementedError, tokenize errors, MemoryError...).
        raise ValueError(f"{path}: not a valid NumPy file ({_reason(e)})") from None


def _npz_member(z: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return z[key]
    except ValueError as e:
        if "pickle" in str(e):
            raise ValueError(
                f"{path}: array {key!r} holds Python objects (needs pickle), "
                "which aelab refuses to load"
            ) from None
        raise ValueError(f"{path}: cannot read array {key!r} ({_reason(e)})") from None
    except Exception as e:  # a damaged member: see _np_load
        raise ValueError(f"{path}: cannot read array {key!r} ({_reason(e)})") from None


def _read_npz(
    z: np.lib.npyio.NpzFile, path: Path, split: str
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """(images, labels or None, class names or None) from an opened ``.npz`` file; closes it."""
    with z:
        keys = list(z.files)
        if not keys:
            raise ValueError(f"{path}: the .npz file holds no arrays")
        image_keys = [*IMAGE_KEYS, *(f"{k}_{split}" for k in IMAGE_KEYS)]
        label_keys = [*LABEL_KEYS, *(f"{k}_{split}" for k in LABEL_KEYS)]
        ikey = next((k for k in image_keys if k in keys), None)
        if ikey is None:
            # Read by name only: taking the first member trained on whatever it held.
            held = ", ".join(map(repr, keys[:8])) + (
                f" and {len(keys) - 8} more" if len(keys) > 8 else ""
            )
            raise ValueError(
                f"{path}: no 'images' array in the .npz (it holds {held}); "
                f"save the images as 'images' (or 'x', 'images_{split}', 'x_{split}'), with "
                "optional 'labels' and 'class_names': np.savez(path, images=..., labels=...)"
            )
        lkey = next((k for k in label_keys if k in keys), None)
        images = _npz_member(z, ikey, path)
        labels = None if lkey is None else _npz_member(z, lkey, path)
        names = None
        if "class_names" in keys:
            raw_names = _npz_member(z, "class_names", path).reshape(-1)
            names = [
                s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in raw_names
            ]
            repeated = sorted({s for s in names if names.count(s) > 1})
            if repeated:
                raise ValueError(
                    f"{path}: class_names repeat {repeated[0]!r}; give each class one name"
                )
    return images, labels, names


def _channels_last(a: np.ndarray, path: Path) -> np.ndarray:
    """View ``a`` as (N, H, W, C), validating its rank."""
    if a.ndim == 3:
        return a[..., None]
    if a.ndim == 4:
        if a.shape[-1] in (1, 2, 3, 4):
            return a
        if a.shape[1] in (1, 2, 3, 4):
            return a.transpose(0, 2, 3, 1)
        raise ValueError(
            f"{path}: shape {a.shape} has no channel axis of size 1-4 at the end (N, H, W, C) "
            "or after N (N, C, H, W)"
        )
    raise ValueError(
        f"{path}: images must have shape (N, H, W) or (N, H, W, C), got rank {a.ndim} "
        f"shape {a.shape}; a single image needs a leading axis of 1 (a[None])"
    )


def _check_image_axes(a: np.ndarray, path: Path) -> None:
    """Refuse an (N, H, W, C) array without images or with empty images."""
    n, h, w, _ = a.shape
    if n == 0:
        raise ValueError(f"{path}: the array holds no images (first axis is 0)")
    if h == 0 or w == 0:
        raise ValueError(
            f"{path}: images of shape {a.shape[1:]} have no pixels (height or width 0)"
        )


def _to_uint8(chunk: np.ndarray, path: Path, start: int) -> np.ndarray:
    """Validate and convert one chunk of rows to uint8 (rows ``start`` onward, for messages)."""
    if chunk.dtype == np.uint8:
        return chunk
    if np.issubdtype(chunk.dtype, np.floating):
        if chunk.size and not np.isfinite(chunk).all():
            raise ValueError(f"{path}: images contain NaN or infinite values (near row {start})")
        lo, hi = (float(chunk.min()), float(chunk.max())) if chunk.size else (0.0, 0.0)
        if lo < 0.0 or hi > 1.0:
            hint = " (looks like 0-255: divide by 255 or save as uint8)" if hi <= 255.0 else ""
            raise ValueError(
                f"{path}: float images must be in [0, 1], found values in [{lo:g}, {hi:g}] "
                f"(rows from {start}){hint}"
            )
        return np.rint(chunk * 255.0).astype(np.uint8)
    if np.issubdtype(chunk.dtype, np.integer) and chunk.dtype != np.bool_:
        lo, hi = (int(chunk.min()), int(chunk.max())) if chunk.size else (0, 0)
        if lo < 0 or hi > 255:
            raise ValueError(
                f"{path}: integer images must be in [0, 255], found values in [{lo}, {hi}]; "
                "rescale to uint8 first"
            )
        return chunk.astype(np.uint8)
    raise ValueError(
        f"{path}: unsupported image dtype {chunk.dtype}; use uint8 or floats in [0, 1]"
    )


def _images_tensor(
    a: np.ndarray,
    path: Path,
    size: tuple[int, int] | None,
    channels: int | None,
    fit: str,
    progress: bool,
) -> torch.Tensor:
    """(N, C, H, W) uint8 tensor from an (N, H, W, C) array; zero-copy when possible."""
    n, h, w, c = a.shape
    target_c = channels if channels is not None else (c - 1 if c in (2, 4) else c)
    th, tw = size if size is not None else (h, w)
    if a.dtype == np.uint8 and c == target_c and (th, tw) == (h, w):
        # Zero copy: for a memory map, rows are read from disk only when indexed.
        return torch.from_numpy(a).permute(0, 3, 1, 2)
    _check_fits((n, target_c, th, tw), path)
    out = torch.empty((n, target_c, th, tw), dtype=torch.uint8)
    starts = range(0, n, _CHUNK)
    show = progress_bars(progress and n >= _PROGRESS_MIN_ROWS)
    for i in tqdm(starts, desc="converting", unit="chunk", disable=not show):
        chunk = _to_uint8(np.ascontiguousarray(a[i : i + _CHUNK]), path, i)
        t = torch.from_numpy(chunk).permute(0, 3, 1, 2)
        out[i : i + _CHUNK] = _conform_uint8(t, size, channels, fit)
    return out


#: Label values at or above this are refused before any cast (float and uint64
#: labels would wrap around in int64); the class rule refuses far smaller ones.
_LABEL_CEILING = 2**53


def _labels_from_values(values: np.ndarray, source: str) -> tuple[np.ndarray, list[str] | None]:
    """int64 labels (and class names when the values are strings) from a 1-D array.

    Numbers must be whole, finite and non-negative; booleans count as 0 and 1.
    Whether they fit the classes is :func:`_check_label_range`'s job.
    """
    if values.ndim == 2 and values.shape[1] == 1:  # a column, as scikit-learn users keep them
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{source}: labels must be 1-D (one per image), got shape {values.shape}")
    if values.dtype.kind in "US":
        strs = values.astype(str)
        names = sorted(set(strs.tolist()))
        lookup = {s: i for i, s in enumerate(names)}
        return np.array([lookup[s] for s in strs], dtype=np.int64), names
    if values.dtype.kind == "b":
        return values.astype(np.int64), None
    if values.dtype.kind not in "iuf":
        raise ValueError(
            f"{source}: unsupported label dtype {values.dtype}; use integers or strings"
        )
    if values.size == 0:
        return values.astype(np.int64), None
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.rint(values))
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"{source}: labels must be whole numbers, got {values[row].item()} in row {row}"
            )
    if values.min() < 0:
        row = int(np.argmin(values))
        raise ValueError(
            f"{source}: label {values[row].item()} in row {row} is negative; "
            "labels number the classes from 0"
        )
    if values.max() >= _LABEL_CEILING:
        row = int(np.argmax(values))
        raise ValueError(
            f"{source}: label {values[row].item()} in row {row} is far too large for a class number; "
            "renumber the labels 0..K-1"
        )
    return values.astype(np.int64), None


def _check_label_range(
    labels: np.ndarray, class_names: list[str] | None, source: str, fix: str
) -> None:
    """Refuse labels that do not fit the classes (the rule is in the module docstring).

    ``labels`` are non-negative int64; ``fix`` says how to give class names
    for this kind of source.
    """
    if labels.size == 0:
        return
    hi = int(labels.max())
    if class_names is not None:
        if hi >= len(class_names):
            raise ValueError(
                f"{source}: label {hi} (row {int(np.argmax(labels))}) is out of range for "
                f"{len(class_names)} class names; labels must be in [0, {len(class_names)})"
            )
        return
    k = len(np.unique(labels))
    if hi + 1 > 2 * k:
        raise ValueError(
            f"{source}: label {hi} (row {int(np.argmax(labels))}) would make {hi + 1} classes "
            f"but only {k} distinct labels occur; without class names, at least half of the "
            f"classes 0..{hi} must occur: {fix}, or renumber the labels 0..{k - 1}"
        )


def _read_label_csv(path: Path) -> np.ndarray:
    """One label per row: the ``label`` (or ``y``/``class``/``target``) column, else the last."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError(f"{path}: the labels CSV is empty")
    col = -1
    header = [cell.strip().lower() for cell in rows[0]]
    if _KNOWN_HEADER_CELLS.intersection(header):
        col = next((header.index(k) for k in _LABEL_HEADER_NAMES if k in header), -1)
        rows = rows[1:]
    try:
        cells = [r[col].strip() for r in rows]
    except IndexError:
        raise ValueError(f"{path}: a row has fewer columns than the header") from None
    if any(not cell for cell in cells):
        raise ValueError(f"{path}: empty label in row {cells.index('') + 1}")
    try:
        return np.array([int(cell) for cell in cells], dtype=np.int64)
    except ValueError:
        return np.array(cells, dtype=str)


def read_labels_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[str] | None]:
    """Labels from a ``.npy`` (1-D) or ``.csv`` file, one per image, in image order.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    class_names : list of str or None
        The sorted distinct values when the labels are strings (then ``labels``
        index into them), else ``None``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: labels file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        loaded = _np_load(path)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            loaded.close()
            raise ValueError(
                f"{path}: an .npz archive, not one array; save the labels with np.save"
            )
        values = np.asarray(loaded)
    elif suffix == ".csv":
        values = _read_label_csv(path)
    else:
        raise ValueError(
            f"{path}: labels must be a .npy or .csv file, got {suffix or 'no extension'}"
        )
    return _labels_from_values(values, str(path))


def load_array(
    path: str | os.PathLike[str],
    *,
    split: str,
    labels: str | os.PathLike[str] | None,
    image_size: tuple[int, int] | None,
    channels: int | None,
    fit: str,
    progress: bool,
) -> ImageDataset:
    """Read a ``.npy`` or ``.npz`` file (see the module docstring); trusts its arguments.

    ``labels`` (a ``.npy``/``.csv`` file) takes precedence over labels stored
    in an ``.npz``. ``split`` picks ``images_<split>``/``x_<split>`` keys in an
    ``.npz`` that has no plain ``images``/``x`` key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    class_names: list[str] | None = None
    label_values: np.ndarray | None = None
    # The content decides, not the name: numpy opens an archive whatever its suffix.
    # Mode "c" (copy-on-write) maps a plain array as a writable view torch accepts
    # without copying; it does not apply to archives.
    raw = _np_load(path, mmap_mode="c")
    if isinstance(raw, np.lib.npyio.NpzFile):
        raw, label_values, class_names = _read_npz(raw, path, split)
    a = _channels_last(np.asarray(raw) if not isinstance(raw, np.memmap) else raw, path)
    _check_image_axes(a, path)
    n = a.shape[0]

    label_arr: np.ndarray | None = None
    if labels is not None:
        label_arr, names = read_labels_file(labels)
        class_names = names or None
        source, fix = str(labels), "write class names instead of numbers"
    elif label_values is not None:
        label_arr, names = _labels_from_values(np.asarray(label_values), f"{path} labels")
        class_names = names or class_names
        source, fix = f"{path} labels", "give class_names in the .npz"
    if label_arr is not None:
        if label_arr.shape[0] != n:
            raise ValueError(f"{source}: {label_arr.shape[0]} labels for {n} images")
        _check_label_range(label_arr, class_names, source, fix)

    images = _images_tensor(a, path, image_size, channels, fit, progress)
    return ImageDataset(
        images=images,
        labels=None if label_arr is None else torch.from_numpy(label_arr),
        ids=RowIds(n),
        class_names=class_names,
    )


def from_array(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor | None = None,
    *,
    ids: list[str] | None = None,
    class_names: list[str] | None = None,
) -> ImageDataset:
    """An :class:`ImageDataset` from images already in memory.

    Parameters
    ----------
    images : array-like of shape (n_samples, H, W), (n_samples, H, W, C) or (n_samples, C, H, W)
        uint8, floats in [0, 1], or integers in [0, 255]; C in 1-4 (alpha is
        dropped). The same rules as a ``.npy`` file (see the module docstring).
    labels : array-like of shape (n_samples,), optional
        Integer class indices, or strings (then sorted into class names).
    ids : list of str, optional
        One id per image; defaults to the row numbers as text.
    class_names : list of str, optional
        Names of the integer labels.

    Returns
    -------
    ImageDataset
        Images as uint8 (n_samples, C, H, W); a uint8 channels-last input is
        shared, not copied.

    Raises
    ------
    ValueError
        For an array that is not 3-D or 4-D, has no channel axis of size 1-4,
        holds values outside the accepted ranges, or labels/ids of the wrong length.
    """
    source = Path("<array>")
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    a = _channels_last(a, source)
    _check_image_axes(a, source)
    n = a.shape[0]
    tensor = _images_tensor(a, source, None, None, "resize", progress=False)
    label_t = None
    if labels is not None:
        values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        label_arr, names = _labels_from_values(np.asarray(values), "labels")
        if label_arr.shape[0] != n:
            raise ValueError(f"{label_arr.shape[0]} labels for {n} images")
        class_names = names or class_names
        _check_label_range(label_arr, class_names, "labels", "pass class_names")
        label_t = torch.from_numpy(label_arr)
    if ids is not None and len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} images")
    return ImageDataset(
        images=tensor,
        labels=label_t,
        ids=[str(i) for i in ids] if ids is not None else RowIds(n),
        class_names=class_names,
    )
