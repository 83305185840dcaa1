"""Where a task's images come from: a data spec or data in memory, loaded once at the model's shape.

Every task takes its images as a :data:`DataArg`: a spec (an image folder,
``.npy``/``.npz`` file, or ``fashion-mnist[:split]``), a :class:`Source` (a
spec with its labels file and bad-file policy), or an
:class:`~aelab.data.ImageDataset` already in memory. The functions here are
the only place that turns one into images, samples subsets or looks up classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aelab.data.dataset import ImageDataset
from aelab.data.streaming import ImageRows

__all__ = [
    "DataArg",
    "Source",
    "as_source",
    "class_index",
    "describe",
    "input_path",
    "load_images",
    "sample_subset",
    "split_by_class",
    "stream_images",
    "subsample",
    "with_unlabeled",
]

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class Source:
    """A data spec with how to read it.

    Attributes
    ----------
    spec : str
        An image folder (one subfolder per class, or flat), a ``.npy``/``.npz``
        file, or ``fashion-mnist[:train|test|all]``.
    labels : str or None
        A labels file (``.npy``/``.csv``) for array data.
    skip_bad : bool
        Skip unreadable images of a folder (listed) instead of failing.
    """

    spec: str
    labels: str | None = None
    skip_bad: bool = False


#: What tasks accept as images.
DataArg = str | os.PathLike[str] | Source | ImageDataset


def as_source(
    data: DataArg, *, labels: str | os.PathLike[str] | None = None, skip_bad: bool = False
) -> Source | ImageDataset:
    """``data`` as a :class:`Source` (or the dataset itself when already in memory)."""
    if isinstance(data, ImageDataset | Source):
        if labels is not None or skip_bad:
            raise ValueError("labels= and skip_bad= apply to a data spec, not to loaded data")
        return data
    if not isinstance(data, str | os.PathLike):
        raise ValueError(
            f"data must be a folder, .npy/.npz file, fashion-mnist[:split] or an ImageDataset, "
            f"got {type(data).__name__}"
        )
    return Source(os.fspath(data), None if labels is None else os.fspath(labels), skip_bad)


def describe(data: DataArg) -> str:
    """A short text naming ``data`` for run records (``<memory>`` for a dataset in memory)."""
    if isinstance(data, ImageDataset):
        return "<memory>"
    if isinstance(data, Source):
        return data.spec
    return os.fspath(data)


def input_path(data: DataArg) -> str | None:
    """The file or folder ``data`` reads, if any (so that no output is written over it)."""
    if isinstance(data, ImageDataset):
        return None
    spec = data.spec if isinstance(data, Source) else os.fspath(data)
    return spec if Path(spec).exists() else None


def load_images(
    data: DataArg,
    *,
    shape: Shape | None = None,
    labels: str | os.PathLike[str] | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    read_labels: bool = True,
) -> ImageDataset:
    """Load ``data`` into memory, brought to ``shape`` (channels, height, width) when given.

    ``read_labels=False`` leaves an array's labels unread (images used without them).
    """
    from aelab.data import conform, load_dataset

    src = as_source(data, labels=labels, skip_bad=skip_bad)
    size = None if shape is None else shape[1]
    channels = None if shape is None else shape[0]
    if isinstance(src, ImageDataset):
        return src if shape is None else conform(src, image_size=size, channels=channels)
    return load_dataset(
        src.spec, labels=src.labels, image_size=size, channels=channels,
        skip_bad=src.skip_bad, progress=progress, read_labels=read_labels,
    )  # fmt: skip


def _stream_shape_error(data: DataArg, got: Any, want: Any, who: str) -> ValueError:
    return ValueError(
        f"{describe(data)}: images are {'x'.join(map(str, got))} but {who} wants "
        f"{'x'.join(map(str, want))}; streaming reads the array as it is, so save it "
        "at the model's size and channels (uint8) or drop --stream"
    )


def stream_images(data: DataArg, *, shape: Shape | None = None) -> ImageDataset | Any:
    """``data`` as something read batch by batch: an ImageFolderStream or a memory-mapped set.

    With ``shape`` a folder is decoded at that size and an array must already have it.
    Wrap the result in :class:`~aelab.data.ImageRows` to read it.
    """
    from aelab.data import DataSpec, ImageFolderStream, load_dataset

    src = as_source(data)
    if isinstance(src, ImageDataset):
        source: Any = src
    else:
        if src.skip_bad:
            raise ValueError(
                "--skip-bad needs the eager loader (it drops files before use); "
                "clean the folder or drop --stream"
            )
        spec = DataSpec.parse(src.spec)
        if src.labels is not None and spec.kind not in ("npy", "npz"):
            raise ValueError(f"--labels applies to .npy/.npz data, not to a {spec.kind}")
        if spec.kind == "folder":
            assert spec.path is not None
            source = ImageFolderStream(
                spec.path,
                image_size=None if shape is None else shape[1:],
                channels=None if shape is None else shape[0],
            )
        elif spec.kind == "npz":
            raise ValueError(
                f"{src.spec}: an .npz archive is read into memory whole; save the images as .npy "
                "(np.save) to stream them, or drop --stream"
            )
        else:
            if spec.kind == "npy":
                assert spec.path is not None
                dtype = np.load(spec.path, mmap_mode="r", allow_pickle=False).dtype
                if dtype != np.uint8:
                    raise ValueError(
                        f"{src.spec}: streaming reads a uint8 .npy as it is, this one holds "
                        f"{dtype}; save it as uint8 (e.g. (a * 255).round().astype(np.uint8)) "
                        "or drop --stream"
                    )
            source = load_dataset(src.spec, labels=src.labels, progress=False)
    if shape is not None and tuple(source.image_shape) != tuple(shape):
        raise _stream_shape_error(data, source.image_shape, shape, "the model")
    return source


def with_unlabeled(
    images: ImageDataset, more: DataArg | None, *, name: str = "--unlabeled"
) -> ImageDataset:
    """``images`` followed by the images of ``more`` at the same shape, without labels.

    ``more`` is a flat image folder or an ``.npy``/``.npz`` array (a labelled
    set is accepted and its labels are ignored: these images only add to an
    unlabeled pool). ``None`` returns ``images`` unchanged. Ids of the added
    images start with ``+`` so that they never collide with ``images``'.

    Raises
    ------
    ValueError
        One line, prefixed by ``name``, when ``more`` cannot be read or holds no image.
    """
    if more is None:
        return images
    try:
        extra = load_images(more, shape=images.image_shape, progress=False, read_labels=False)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"{name}: {e}") from None
    if len(extra) == 0:
        raise ValueError(
            f"{name}: {describe(more)} holds no image; give a folder or array of images"
        )
    import torch

    return ImageDataset(
        images=torch.cat([images.images, extra.images]), labels=None,
        ids=[*map(str, images.ids), *(f"+{i}" for i in extra.ids)],
    )  # fmt: skip


def _check_count(name: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"{name} must be a whole number >= 0 (0: all), got {n!r}")
    return int(n)


def subsample(
    ds: ImageDataset | ImageRows, n: int, seed: int, *, name: str = "max_images"
) -> ImageDataset | ImageRows:
    """At most ``n`` images of ``ds`` (a seeded sample in source order); ``n=0`` keeps all.

    ``name`` is the setting that gave ``n``, for the error message.
    """
    n = _check_count(name, n)
    if n and len(ds) > n:
        index = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
        return ds.subset(index)
    return ds


def class_index(ds: ImageDataset | ImageRows, cls: str | int) -> int:
    """Index of a class of ``ds`` given by index or name (one-line error otherwise)."""
    from aelab.data import resolve_class

    if ds.labels is None:
        raise ValueError("a class was named, but this data has no labels")
    return resolve_class(ds, cls)


def split_by_class(ds: ImageDataset, classes: list[str | int]) -> tuple[ImageDataset, ImageDataset]:
    """The images of ``classes`` and the images of every other class."""
    keep = [class_index(ds, c) for c in classes]
    mask = np.isin(ds.labels.numpy(), keep)  # type: ignore[union-attr]
    return ds.subset(np.flatnonzero(mask)), ds.subset(np.flatnonzero(~mask))


def sample_subset(
    ds: ImageDataset | ImageRows,
    *,
    classes: list[int | str] | None = None,
    ratio: list[float] | None = None,
    n: int | None = None,
    seed: int = 0,
) -> tuple[ImageDataset | ImageRows, np.ndarray]:
    """A seeded subset: some classes in a ratio (relabelled 0..k-1), or ``n`` random images.

    Parameters
    ----------
    ds : ImageDataset or ImageRows
        Images in memory, or a view read batch by batch (then only the labels
        are read and the subset is a view too).
    classes : list of int or str, optional
        Keep these classes (see :func:`aelab.data.select_classes`), renumbered
        0..k-1 in this order with matching class names.
    ratio : list of float, optional
        Their relative sizes; needs ``classes``.
    n : int, optional
        Images in all (per ``ratio``, equal shares, or a random sample without ``classes``).
    seed : int

    Returns
    -------
    subset : ImageDataset or ImageRows
        Rows in source order; ids are those of ``ds``.
    index : ndarray of shape (n_subset,), int64
        Each row's position in ``ds``.
    """
    from aelab.data import select_classes

    if ratio is not None and classes is None:
        raise ValueError("--ratio needs --classes (the classes the ratio refers to)")
    if n is not None and (isinstance(n, bool) or n < 1):
        raise ValueError(f"--n must be >= 1, got {n}")
    if classes is not None:
        if ds.labels is None:
            raise ValueError(
                "--classes needs labeled data (class subfolders, labels in the .npz, or --labels)"
            )
        return select_classes(
            ds, classes, ratio=ratio, n=n, seed=seed, relabel=True, return_index=True
        )  # type: ignore[return-value]
    if n is not None and n < len(ds):
        index = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
        return ds.subset(index), index
    return ds, np.arange(len(ds), dtype=np.int64)
