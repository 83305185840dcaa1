"""Datasets larger than memory: rows read per batch, image files decoded on access.

Two pieces, both read only the images a batch needs:

- :class:`ImageFolderStream` lists the files of an image folder (the same
  layout and safety checks as :func:`aelab.data.load_dataset` on a folder:
  decompression bombs refused from the header, truncated files refused) and
  decodes an image only when it is indexed, so a folder of ten million images
  costs its file list, not its pixels.
- :class:`ImageRows` is a view of some rows of an :class:`ImageDataset`
  (typically a ``.npy`` memory map) or of an :class:`ImageFolderStream`,
  without copying them: the training recipes accept it wherever they accept an
  :class:`ImageDataset`, and gather each batch's rows in sorted order (good
  locality on a memory map) before putting them back in batch order.

With ``num_workers > 0`` the recipes read batches in worker processes through
a ``torch.utils.data.DataLoader`` (one whole batch per worker task), which
overlaps decoding with training. Paths are kept in one NumPy byte array, not a
list of Python strings, so forked workers do not copy the list page by page as
reference counts change.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.data.dataset import ImageDataset, take_ids
from aelab.data.folder import _decode, _discover, _read_header, _refuse_truncated
from aelab.data.transforms import check_channels, check_fit, parse_image_size

__all__ = ["ImageFolderStream", "ImageRows", "as_rows"]

#: Files whose headers are read to choose the size and channels when not given.
_HEADER_SAMPLE = 256


class ImageFolderStream:
    """An image folder whose files are decoded when indexed, never all at once.

    Parameters
    ----------
    root : str or path
        A folder with one subfolder per class (labels = sorted subfolder
        names) or with images directly inside (unlabeled), as for
        :func:`aelab.data.load_dataset`.
    image_size : int or (height, width), optional
        Size every image is brought to. Without it, the most common size
        among up to 256 evenly spaced files is used.
    channels : {1, 3}, optional
        Without it: 1 when those sampled files are all grayscale, else 3.
    fit : {"resize", "letterbox", "pad"}
        How to reach the size (see :mod:`aelab.data.transforms`).

    Attributes
    ----------
    labels : torch.Tensor of shape (n_samples,), int64, or None
    class_names : list of str or None

    Notes
    -----
    A bad file (corrupt, truncated, over :data:`aelab.data.folder.MAX_IMAGE_PIXELS`)
    raises :class:`aelab.data.BadImageError` naming it when a batch reaches it;
    there is no ``skip_bad`` here because skipping would change the dataset's
    length half-way through an epoch. Clean the folder, or load it eagerly with
    ``load_dataset(..., skip_bad=True)``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_size: int | Sequence[int] | None = None,
        channels: int | None = None,
        fit: str = "resize",
    ) -> None:
        size = parse_image_size(image_size)
        channels = check_channels(channels)
        check_fit(fit)
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: not a folder; give a folder of images")
        files, labels, class_names = _discover(self.root)
        # One byte array of relative paths: compact, and shared by forked workers.
        rel = [os.fsencode(p.relative_to(self.root)) for p in files]
        self._paths = np.array(rel, dtype=np.bytes_)
        del files, rel
        self.labels = None if labels is None else torch.tensor(labels, dtype=torch.int64)
        self.class_names = class_names
        if size is None or channels is None:
            pick = np.linspace(0, len(self) - 1, num=min(_HEADER_SAMPLE, len(self))).astype(int)
            heads = [_read_header(self._path(int(i))) for i in np.unique(pick)]
            if channels is None:
                channels = 1 if all(h.gray for h in heads) else 3
            if size is None:
                size = Counter((h.height, h.width) for h in heads).most_common(1)[0][0]
        self.image_size: tuple[int, int] = size
        self.channels: int = channels
        self.fit = fit

    def _path(self, i: int) -> Path:
        return self.root / os.fsdecode(self._paths[i])

    def __len__(self) -> int:
        return int(self._paths.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of every decoded image."""
        return (self.channels, *self.image_size)

    @property
    def num_classes(self) -> int | None:
        """Number of classes (``None`` for an unlabeled folder)."""
        return None if self.class_names is None else len(self.class_names)

    def class_name(self, label: int) -> str:
        """Display name of class index ``label``."""
        return self.class_names[label] if self.class_names is not None else str(label)

    @property
    def ids(self) -> list[str]:
        """File stems, or relative paths when stems repeat (as for an eager folder load)."""
        rel = [os.fsdecode(p) for p in self._paths]
        stems = [Path(r).stem for r in rel]
        return stems if len(set(stems)) == len(stems) else [Path(r).as_posix() for r in rel]

    def read(self, rows: torch.Tensor) -> torch.Tensor:
        """Decode images ``rows``: uint8 tensor of shape (len(rows), C, H, W)."""
        out = np.empty((len(rows), *self.image_shape), dtype=np.uint8)
        with _refuse_truncated():
            for j, i in enumerate(rows.tolist()):
                out[j] = _decode(self._path(i), self.image_size, self.channels, self.fit)
        return torch.from_numpy(out)


class ImageRows:
    """Rows of an image source, viewed without copying.

    Parameters
    ----------
    source : ImageDataset or ImageFolderStream
        An in-memory or memory-mapped dataset, or a lazily decoded folder.
    index : array-like of int of shape (n_rows,), optional
        Rows of ``source`` in this view (all of them when omitted).
    labels : bool
        Keep the source's labels (``False`` gives an unlabeled view, as
        :func:`aelab.data.split_dataset` does for its unlabeled part).
    """

    def __init__(
        self,
        source: ImageDataset | ImageFolderStream,
        index: np.ndarray | torch.Tensor | Sequence[int] | None = None,
        *,
        labels: bool = True,
    ) -> None:
        if not isinstance(source, ImageDataset | ImageFolderStream):
            raise ValueError(
                f"source must be an ImageDataset or ImageFolderStream, got {type(source).__name__}"
            )
        n = len(source)
        if index is None:
            rows = torch.arange(n)
        else:
            rows = torch.as_tensor(np.asarray(index), dtype=torch.long).reshape(-1)
            if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
                raise ValueError(f"index holds rows outside [0, {n}) of the source")
        self.source = source
        self.index = rows
        src_labels = source.labels if labels else None
        self.labels = None if src_labels is None else src_labels[rows]
        self.class_names = source.class_names

    def __len__(self) -> int:
        return int(self.index.numel())

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.source.image_shape)  # type: ignore[return-value]

    @property
    def num_classes(self) -> int | None:
        """Number of classes, from the names or else the largest label + 1."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is not None and len(self.labels):
            return int(self.labels.max()) + 1
        return None

    def class_name(self, label: int) -> str:
        """Display name of class index ``label``."""
        return self.class_names[label] if self.class_names is not None else str(label)

    @property
    def ids(self) -> Sequence[str]:
        """Ids of the rows in this view (lazy for an array source: see :class:`RowIds`)."""
        return take_ids(self.source.ids, self.index.numpy())

    def subset(self, index: np.ndarray | torch.Tensor | Sequence[int]) -> ImageRows:
        """Rows ``index`` of this view, again without copying images."""
        pos = torch.as_tensor(np.asarray(index), dtype=torch.long).reshape(-1)
        if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= len(self)):
            raise ValueError(f"index holds rows outside [0, {len(self)})")
        out = ImageRows.__new__(ImageRows)
        out.source, out.index, out.class_names = self.source, self.index[pos], self.class_names
        out.labels = None if self.labels is None else self.labels[pos]
        return out

    def read(self, pos: torch.Tensor) -> torch.Tensor:
        """Images at positions ``pos`` of this view: uint8 tensor (len(pos), C, H, W).

        Rows are read from the source in increasing order (sequential access on
        a memory map or a disk) and returned in the order of ``pos``.
        """
        rows = self.index[pos]
        srt, order = torch.sort(rows)
        if isinstance(self.source, ImageFolderStream):
            got = self.source.read(srt)
        else:
            got = self.source.images[srt]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        return got[inverse].contiguous()

    def load(self) -> ImageDataset:
        """Everything in this view as an in-memory :class:`ImageDataset` (a copy)."""
        images = self.read(torch.arange(len(self)))
        return ImageDataset(images, self.labels, self.ids, class_names=self.class_names)


def as_rows(data: Any) -> ImageRows:
    """``data`` as an :class:`ImageRows` view (an ImageDataset or stream: all its rows)."""
    if isinstance(data, ImageRows):
        return data
    return ImageRows(data)
