"""Batches of uint8 images and their conversion to floats.

The training loop moves uint8 batches to the device (a quarter of the bytes of
float32) and converts them there with :func:`to_float`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from aelab.data.dataset import ImageDataset


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images (any shape) to floats in [0, 1], on the same device.

    Raises
    ------
    ValueError
        When ``images`` is not uint8.
    """
    if images.dtype != torch.uint8:
        raise ValueError(f"to_float expects uint8 images, got {images.dtype}")
    return images.to(dtype).div_(255.0)


def batch_indices(
    n: int,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[torch.Tensor]:
    """Index tensors (int64) covering ``range(n)`` in batches of ``batch_size``.

    With ``shuffle`` the order is a permutation drawn from ``generator`` (or
    torch's global generator when ``None``); otherwise it is 0..n-1.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i : i + batch_size]


def iterate_batches(
    ds: ImageDataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    with_index: bool = False,
    index: np.ndarray | torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield ``(images, labels)`` batches of ``ds``: uint8 (b, C, H, W) and int64 (b,) or None.

    Only the rows of each batch are gathered, so a memory-mapped dataset reads
    just those rows from disk. With ``with_index`` each item is
    ``(index, images, labels)``, ``index`` being the rows of ``ds`` (int64).

    Parameters
    ----------
    ds : ImageDataset
    batch_size : int
    shuffle : bool
        A fresh permutation per call (per epoch), drawn from ``generator``.
    generator : torch.Generator, optional
        Source of the permutation; torch's global generator when ``None``.
    drop_last : bool
        Leave out a last, smaller batch.
    with_index : bool
        Also yield the row indices.
    index : array-like of int, optional
        Iterate over these rows of ``ds`` only (e.g. ``Splits.unlabeled_index``),
        without copying them out first: the way to train on a split of a
        memory-mapped dataset larger than memory.
    """
    rows = None if index is None else torch.as_tensor(np.asarray(index), dtype=torch.long)
    if rows is not None and rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= len(ds)):
        raise ValueError(f"index holds rows outside [0, {len(ds)})")
    n = len(ds) if rows is None else int(rows.numel())
    for pos in batch_indices(
        n, batch_size, shuffle=shuffle, generator=generator, drop_last=drop_last
    ):
        idx = pos if rows is None else rows[pos]
        images = ds.images[idx].contiguous()
        labels = None if ds.labels is None else ds.labels[idx]
        yield (idx, images, labels) if with_index else (images, labels)
