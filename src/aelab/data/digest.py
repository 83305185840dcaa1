"""A digest of a set of images, for the fingerprint of what a result was computed from.

Images held in memory are hashed with their labels, ids and class names
(:func:`aelab.fingerprint.array_digest`); an image folder read file by file is
stamped by its files' paths, sizes and modification times
(:func:`aelab.fingerprint.files_digest`), so deciding whether it changed never
reads the data whole.
"""

from __future__ import annotations

from typing import Any

from aelab.data.dataset import ImageDataset
from aelab.data.streaming import ImageFolderStream, ImageRows
from aelab.fingerprint import array_digest, digest, files_digest

__all__ = ["data_digest"]


def data_digest(data: ImageDataset | ImageRows | ImageFolderStream | None) -> str | None:
    """A short hash that changes when the images, labels, ids or class names of ``data`` do.

    Parameters
    ----------
    data : ImageDataset, ImageRows, ImageFolderStream or None
        ``None`` (no such set) gives ``None``.

    Raises
    ------
    ValueError
        For anything else.
    """
    if data is None:
        return None
    if isinstance(data, ImageDataset):
        return digest([array_digest(data.images, data.labels), _ids(data.ids), data.class_names])
    if isinstance(data, ImageRows):
        labels = None if data.labels is None else array_digest(data.labels)
        return digest([data_digest(data.source), array_digest(data.index), labels])
    if isinstance(data, ImageFolderStream):
        shape = [data.channels, list(data.image_size), data.fit]
        return digest([files_digest([data.root]), shape, data.class_names])
    raise ValueError(f"cannot fingerprint {type(data).__name__}: give an ImageDataset or ImageRows")


def _ids(ids: Any) -> str:
    return digest([str(i) for i in ids])
