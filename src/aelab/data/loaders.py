"""One entry point, :func:`load_dataset`, for every data source aelab reads."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aelab.data import fashion_mnist as _fmnist
from aelab.data.arrays import load_array
from aelab.data.dataset import ImageDataset
from aelab.data.folder import load_folder
from aelab.data.transforms import check_channels, check_fit, conform, parse_image_size

_BUILTIN_NAMES = ("fashion-mnist", "fashion_mnist", "fmnist")

ACCEPTED_SPECS = (
    "a folder of images (one subfolder per class, or flat for unlabeled; "
    "PNG/JPEG/BMP/WebP), a .npy file of images, a .npz file (arrays 'images'/'x' "
    "and optional 'labels'/'y'), or fashion-mnist[:train|test|all]"
)


@dataclass(frozen=True)
class DataSpec:
    """A parsed data source.

    Attributes
    ----------
    kind : {"folder", "npy", "npz", "fashion-mnist"}
    path : pathlib.Path or None
        The folder or file; ``None`` for the built-in dataset.
    split : str
        For ``fashion-mnist``: ``train``, ``test`` or ``all``; for an ``.npz``
        the ``<key>_<split>`` arrays used when there is no plain ``images``/``x``.
    """

    kind: str
    path: Path | None
    split: str = "train"

    @classmethod
    def parse(cls, spec: str | os.PathLike[str], *, split: str = "train") -> DataSpec:
        """Recognise ``spec``; ``split`` is the default when the spec names none.

        Raises
        ------
        ValueError
            For a spec that is none of the accepted forms (the message lists them).
        FileNotFoundError
            For a ``.npy``/``.npz`` path that does not exist.
        """
        if not isinstance(spec, str | os.PathLike):
            raise ValueError(f"data spec must be a string or path, got {type(spec).__name__}")
        text = os.fspath(spec)
        name, _, suffix = text.partition(":")
        if name.strip().lower() in _BUILTIN_NAMES and not Path(text).exists():
            part = (suffix or split).strip().lower()
            if part not in _fmnist.SPLITS:
                raise ValueError(
                    f"unknown Fashion-MNIST split {part!r} in {text!r}; "
                    f"use fashion-mnist:{'|'.join(_fmnist.SPLITS)}"
                )
            return cls(kind="fashion-mnist", path=None, split=part)
        path = Path(text).expanduser()
        if path.is_dir():
            return cls(kind="folder", path=path, split=split)
        ext = path.suffix.lower()
        if ext in (".npy", ".npz"):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file")
            return cls(kind=ext[1:], path=path, split=split)
        if path.exists():
            raise ValueError(f"cannot read {text!r} as a dataset; expected {ACCEPTED_SPECS}")
        raise ValueError(
            f"unknown data spec {text!r} (no such file or folder); expected {ACCEPTED_SPECS}"
        )


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    labels: str | os.PathLike[str] | None = None,
    image_size: int | Sequence[int] | None = None,
    channels: int | None = None,
    skip_bad: bool = False,
    split: str = "train",
    progress: bool = True,
    fit: str = "resize",
) -> ImageDataset:
    """Load any supported source as an :class:`ImageDataset` of uint8 images.

    Parameters
    ----------
    spec : str or path
        A folder of images (one subfolder per class gives labels and class
        names = sorted subfolder names; a flat folder gives unlabeled data), a
        ``.npy`` file of images, a ``.npz`` file (``images``/``x`` and optional
        ``labels``/``y`` and ``class_names`` arrays, read by name), or
        ``"fashion-mnist"``, ``"fashion-mnist:train"``, ``":test"``, ``":all"``.
    labels : path, optional
        A ``.npy`` or ``.csv`` file of labels (one per image, in order) for an
        array spec; overrides labels stored in an ``.npz``. String labels become
        class names (sorted). Numeric labels without class names must use at
        least half of the numbers 0..max label (see :mod:`aelab.data.arrays`).
    image_size : int or (height, width), optional
        Size to bring every image to (see ``fit``). Without it images keep
        their size; a folder of mixed sizes is resized to its most common size.
    channels : {1, 3}, optional
        Channel count to convert to (RGB to gray by luminance, gray to RGB by
        repetition; alpha is always dropped).
    skip_bad : bool
        For folders: skip unreadable, corrupt, truncated or oversized files
        (listed in a warning and in the result's ``skipped``) instead of failing.
    split : str
        Default split for ``fashion-mnist`` when the spec names none.
    progress : bool
        Show a progress bar while reading many files.
    fit : {"resize", "letterbox", "pad"}
        How to reach ``image_size``: stretch (default), keep aspect and pad, or
        pad/crop without scaling. See :mod:`aelab.data.transforms`.

    Returns
    -------
    ImageDataset
        images (n_samples, C, H, W) uint8; ids are file stems (paths relative to
        the folder when stems repeat), row indices for arrays, or
        ``"<split>-<row>"`` for Fashion-MNIST. A ``.npy`` of uint8 images that
        needs no conversion stays memory-mapped.

    Raises
    ------
    ValueError
        Unknown spec, bad images, bad labels (not whole, negative, or beyond
        the classes), wrong array rank or range, images without pixels, or a
        damaged file; the message names the file and the fix.
    FileNotFoundError
        Missing files (for Fashion-MNIST, naming the install command).
    """
    size = parse_image_size(image_size)
    channels = check_channels(channels)
    check_fit(fit)
    ds_spec = DataSpec.parse(spec, split=split)
    if labels is not None and ds_spec.kind not in ("npy", "npz"):
        raise ValueError(
            f"labels= applies to .npy/.npz specs only, not to {ds_spec.kind}; "
            "a folder gets its labels from one subfolder per class"
        )
    if ds_spec.kind == "folder":
        assert ds_spec.path is not None
        return load_folder(
            ds_spec.path,
            image_size=size,
            channels=channels,
            fit=fit,
            skip_bad=skip_bad,
            progress=progress,
        )
    if ds_spec.kind in ("npy", "npz"):
        assert ds_spec.path is not None
        return load_array(
            ds_spec.path,
            split=ds_spec.split,
            labels=labels,
            image_size=size,
            channels=channels,
            fit=fit,
            progress=progress,
        )
    ds = _fmnist.load_fashion_mnist(ds_spec.split)
    return conform(ds, image_size=size, channels=channels, fit=fit)
