"""The one in-memory form every data source is turned into."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

import numpy as np
import torch


class RowIds(Sequence[str]):
    """The ids of array rows ("0", "1", ...) without holding one string per row.

    An array source names its images by row number. A list of those strings
    costs about 60 bytes per image (600 MB for 10 million), the one part of a
    memory-mapped dataset that grew with its size; this sequence keeps the row
    numbers instead (a ``range``, or 8 bytes per row after a subset) and makes
    each string when it is read.

    Parameters
    ----------
    rows : int, range or array-like of int
        ``n`` for rows ``0..n-1``, or the row numbers themselves.
    """

    def __init__(self, rows: int | range | np.ndarray | Sequence[int]) -> None:
        if isinstance(rows, int):
            rows = range(rows)
        self._rows: range | np.ndarray = (
            rows if isinstance(rows, range) else np.asarray(rows, dtype=np.int64).reshape(-1)
        )

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> RowIds: ...
    def __getitem__(self, i: int | slice) -> str | RowIds:
        if isinstance(i, slice):
            return RowIds(self._rows[i])
        return str(int(self._rows[i]))

    def __iter__(self) -> Iterator[str]:
        return (str(int(r)) for r in self._rows)

    def take(self, index: np.ndarray | Sequence[int]) -> RowIds:
        """The ids at positions ``index``, again without strings."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        rows = self._rows
        if isinstance(rows, range):
            return RowIds(rows.start + rows.step * idx if len(idx) else idx)
        return RowIds(rows[idx])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowIds):
            return len(self) == len(other) and bool(
                np.array_equal(np.asarray(self._rows), np.asarray(other._rows))
            )
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, like a list

    def __repr__(self) -> str:
        return (
            f"RowIds({self._rows!r})"
            if isinstance(self._rows, range)
            else f"RowIds(<{len(self)} rows>)"
        )


def take_ids(ids: Sequence[str], index: np.ndarray | Sequence[int]) -> Sequence[str]:
    """``[ids[i] for i in index]``, kept lazy when ``ids`` is a :class:`RowIds`."""
    if isinstance(ids, RowIds):
        return ids.take(index)
    return [ids[i] for i in np.asarray(index, dtype=np.int64).reshape(-1).tolist()]


@dataclass
class ImageDataset:
    """Images as uint8, with optional labels, stable ids and class names.

    Attributes
    ----------
    images : torch.Tensor of shape (n_samples, channels, height, width), uint8
        Pixel values 0-255, channels first.
    labels : torch.Tensor of shape (n_samples,), int64, or None
        Class indices in ``[0, len(class_names))``; ``None`` for unlabeled data.
    ids : sequence of str, length n_samples
        One id per image (file stem, or row index as text, then a
        :class:`RowIds`), kept for CSV output.
    class_names : list of str or None
        Name of each class index; ``None`` when unknown (then names are indices).
    skipped : list of (str, str)
        Files left out while loading with ``skip_bad=True``: (path, reason).
        Empty otherwise; not carried over by :meth:`subset`.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: Sequence[str]
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        n = self.images.shape[0]
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} images")
        if self.labels is not None:
            if self.labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
            self.labels = self.labels.long()
            if n:
                lo, hi = int(self.labels.min()), int(self.labels.max())
                if lo < 0:
                    raise ValueError(f"labels must be >= 0, got {lo}")
                if self.class_names is not None and hi >= len(self.class_names):
                    raise ValueError(
                        f"label {hi} is out of range for {len(self.class_names)} class names "
                        f"({', '.join(self.class_names)}); labels must be in [0, {len(self.class_names)})"
                    )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int | None:
        """Number of classes, from the names or else the largest label + 1."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is not None and len(self.labels):
            return int(self.labels.max()) + 1
        return None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> ImageDataset:
        """The rows ``index`` (in that order) as a new dataset."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageDataset(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            ids=take_ids(self.ids, idx.numpy()),
            class_names=self.class_names,
        )

    def class_name(self, label: int) -> str:
        """Display name of class index ``label``."""
        if self.class_names is not None:
            return self.class_names[label]
        return str(label)


def _listed(values: Sequence[object], limit: int = 8) -> str:
    """``values`` as ``"0, 1, 2"``, the first ``limit`` of them when there are more."""
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def check_classes(
    labels: torch.Tensor | np.ndarray, class_names: Sequence[str] | None, what: str
) -> int:
    """Check that ``labels`` can train a classifier; return its number of classes.

    The classes are the ``class_names`` when given (every label indexes one of
    them); without names they are the labels that occur, which must then be
    numbered ``0..K-1``: labels 0, 1, 2 and one stray 5 would otherwise make a
    6-class head with 3 classes that never occur. Either way images of at
    least two classes must occur: a one-class classifier scores 100 % and
    learns nothing.

    Parameters
    ----------
    labels : array-like of shape (n_samples,), int
        Non-negative class indices.
    class_names : sequence of str or None
    what : str
        The data, named in the message (a path, or ``"labeled"``).

    Returns
    -------
    int
        The number of classes (the names' count, else the distinct labels').

    Raises
    ------
    ValueError
        One line naming the data, the labels at fault and the fix.
    """
    values = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    present = np.unique(values).tolist()
    if class_names is not None and present and present[-1] >= len(class_names):
        raise ValueError(
            f"{what}: label {present[-1]} is out of range for {len(class_names)} class names; "
            f"labels must be in [0, {len(class_names)})"
        )
    if len(present) < 2:
        only = (
            "no labelled images"
            if not present
            else f"only class {class_names[present[0]] if class_names else present[0]!r}"
        )
        raise ValueError(
            f"{what}: a classifier needs images of at least two classes, found {only}; "
            "add images of another class (one subfolder per class, or labels per image)"
        )
    if class_names is not None:
        return len(class_names)
    k = len(present)
    if present[-1] != k - 1:
        missing = sorted(set(range(present[-1] + 1)) - set(present))
        raise ValueError(
            f"{what}: the labels {_listed(present)} leave class(es) {_listed(missing)} without "
            f"images; without class names the classes are the labels that occur, numbered "
            f"0..{k - 1}: renumber the labels 0..{k - 1} or give class names"
        )
    return k
