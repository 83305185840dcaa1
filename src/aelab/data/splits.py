"""Seeded splits for few-label experiments, and seeded class subsets.

:func:`split_dataset` takes the validation set first (stratified by class when
the data are labeled), then picks the labeled training images from what is
left, per class. The unlabeled pool is *everything that is not validation*,
labeled images included, because pre-training the autoencoder uses every
training image; its labels are removed (``labels=None``) so that nothing
trained on it can see them by accident. ``Splits.unlabeled_index`` maps it back
to the source rows when ground truth is needed for evaluation.

All index arrays are sorted (source order); shuffling is the batch iterator's job.
The parts are copies (``ImageDataset.subset``); for a memory-mapped dataset
larger than memory, iterate over the source with
a view of the rows, ``ImageRows(ds, splits.unlabeled_index)``, instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aelab.data.dataset import ImageDataset

if TYPE_CHECKING:
    from aelab.data.streaming import ImageRows


@dataclass
class Splits:
    """The parts of a dataset used by a few-label experiment.

    Attributes
    ----------
    labeled : ImageDataset or None
        Labeled training images (``None`` for unlabeled data).
    unlabeled : ImageDataset
        Every non-validation image, labels removed (for pre-training).
    val : ImageDataset or None
        Validation images (``None`` when no validation was asked for).
    labeled_index, unlabeled_index, val_index : ndarray of int64
        Rows of the source dataset in each part, sorted.
    """

    labeled: ImageDataset | None
    unlabeled: ImageDataset
    val: ImageDataset | None
    labeled_index: np.ndarray
    unlabeled_index: np.ndarray
    val_index: np.ndarray

    def summary(self) -> dict[str, int]:
        """Sizes of the parts, for logs and run records."""
        return {
            "labeled": int(self.labeled_index.size),
            "unlabeled": int(self.unlabeled_index.size),
            "val": int(self.val_index.size),
        }


def _class_rows(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    return [np.flatnonzero(labels == k) for k in range(num_classes)]


def _check_fraction(name: str, value: float | None, *, allow_one: bool) -> None:
    if value is None:
        return
    ok = 0.0 <= value <= 1.0 if allow_one else 0.0 <= value < 1.0
    if not ok:
        upper = "1]" if allow_one else "1)"
        raise ValueError(f"{name} must be in [0, {upper}, got {value}")


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or int(value) != value or value < 0):
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _pick(rng: np.random.Generator, rows: np.ndarray, k: int) -> np.ndarray:
    return rng.choice(rows, size=k, replace=False) if k < rows.size else rows


def split_dataset(
    ds: ImageDataset,
    *,
    labels_per_class: int | None = None,
    labeled_fraction: float | None = None,
    val_fraction: float = 0.1,
    val_per_class: int | None = None,
    seed: int = 0,
) -> Splits:
    """Split ``ds`` into labeled, unlabeled and validation parts, seeded.

    Parameters
    ----------
    ds : ImageDataset
        The data; labels are needed for ``labels_per_class``/``labeled_fraction``
        and make the validation split stratified.
    labels_per_class : int, optional
        Labeled images to keep per class (the few-label setting).
    labeled_fraction : float in [0, 1], optional
        Alternatively, the fraction of each class's non-validation images to
        keep labeled. With neither, every non-validation image is labeled.
    val_fraction : float in [0, 1)
        Fraction of images (of each class, rounded) for validation; 0 for none.
    val_per_class : int, optional
        Validation images per class; overrides ``val_fraction``.
    seed : int
        Seed of the choice; the same seed gives the same split.

    Returns
    -------
    Splits

    Raises
    ------
    ValueError
        Conflicting options, options that need labels on unlabeled data, or a
        class with fewer images than asked for (the message names the class).
    """
    lab_idx, rest, val_idx = split_indices(
        ds, labels_per_class=labels_per_class, labeled_fraction=labeled_fraction,
        val_fraction=val_fraction, val_per_class=val_per_class, seed=seed,
    )  # fmt: skip
    return _assemble(ds, lab_idx, rest, val_idx)


def split_indices(
    ds: ImageDataset | Any,
    *,
    labels_per_class: int | None = None,
    labeled_fraction: float | None = None,
    val_fraction: float = 0.1,
    val_per_class: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """The rows of :func:`split_dataset`'s parts, without copying any image.

    The way to split data larger than memory: wrap the parts as
    :class:`aelab.data.ImageRows` views.

    Parameters
    ----------
    ds : ImageDataset, ImageRows or ImageFolderStream
        Only its length, ``labels``, ``num_classes`` and ``class_name`` are used.
    labels_per_class, labeled_fraction, val_fraction, val_per_class, seed
        As in :func:`split_dataset`.

    Returns
    -------
    labeled_index : ndarray of int64 or None
        ``None`` for unlabeled data.
    unlabeled_index, val_index : ndarray of int64
        Sorted; the same arguments give the same rows as :func:`split_dataset`.

    Raises
    ------
    ValueError
        As :func:`split_dataset`.
    """
    _check_count("labels_per_class", labels_per_class)
    _check_count("val_per_class", val_per_class)
    _check_fraction("labeled_fraction", labeled_fraction, allow_one=True)
    _check_fraction("val_fraction", val_fraction, allow_one=False)
    if labels_per_class is not None and labeled_fraction is not None:
        raise ValueError("give labels_per_class or labeled_fraction, not both")
    n = len(ds)
    if n == 0:
        raise ValueError("cannot split an empty dataset")
    rng = np.random.default_rng(seed)

    if ds.labels is None:
        if (
            labels_per_class is not None
            or labeled_fraction is not None
            or val_per_class is not None
        ):
            raise ValueError(
                "labels_per_class, labeled_fraction and val_per_class need a labeled dataset; "
                "this one has no labels (use a folder with one subfolder per class, or pass labels)"
            )
        k = round(val_fraction * n)
        val_idx = np.sort(rng.choice(n, size=k, replace=False)) if k else np.empty(0, np.int64)
        rest = np.setdiff1d(np.arange(n), val_idx)
        return None, rest, val_idx

    labels = ds.labels.numpy()
    val_parts, rest_parts = [], []
    for k, rows in enumerate(_class_rows(labels, ds.num_classes or 0)):
        want = val_per_class if val_per_class is not None else round(val_fraction * rows.size)
        if want > rows.size:
            raise ValueError(
                f"class {ds.class_name(k)!r} has {rows.size} images, fewer than the "
                f"{want} asked for validation; lower val_per_class"
            )
        chosen = _pick(rng, rows, want)
        val_parts.append(chosen)
        rest_parts.append(np.setdiff1d(rows, chosen))
    lab_parts = [
        _pick(rng, rows, _labeled_count(ds, k, rows.size, labels_per_class, labeled_fraction))
        for k, rows in enumerate(rest_parts)
    ]
    val_idx = np.sort(np.concatenate(val_parts)).astype(np.int64)
    lab_idx = np.sort(np.concatenate(lab_parts)).astype(np.int64)
    rest = np.sort(np.concatenate(rest_parts)).astype(np.int64)
    return lab_idx, rest, val_idx


def _labeled_count(
    ds: Any, k: int, available: int, per_class: int | None, fraction: float | None
) -> int:
    """How many labelled images class ``k`` gives, out of ``available`` left after validation."""
    if per_class is not None:
        if per_class > available:
            raise ValueError(
                f"class {ds.class_name(k)!r} has {available} images left after validation, "
                f"fewer than labels_per_class={per_class}; lower labels_per_class "
                "or the validation share"
            )
        return per_class
    if fraction is not None:
        return round(fraction * available)
    return available


def _assemble(
    ds: ImageDataset, lab_idx: np.ndarray | None, rest: np.ndarray, val_idx: np.ndarray
) -> Splits:
    unlabeled = ds.subset(rest)
    unlabeled.labels = None
    return Splits(
        labeled=None if lab_idx is None else ds.subset(lab_idx),
        unlabeled=unlabeled,
        val=ds.subset(val_idx) if val_idx.size else None,
        labeled_index=np.empty(0, np.int64) if lab_idx is None else lab_idx,
        unlabeled_index=rest,
        val_index=val_idx,
    )


def resolve_class(ds: ImageDataset | ImageRows, c: int | str) -> int:
    """The index of class ``c`` of ``ds``, given by index or by name.

    Raises
    ------
    ValueError
        For an unknown name or an index out of range (the message lists the classes).
    """
    num = ds.num_classes or 0
    if isinstance(c, str):
        if ds.class_names is not None and c in ds.class_names:
            return ds.class_names.index(c)
        try:
            c = int(c)
        except ValueError:
            names = ", ".join(ds.class_names) if ds.class_names else f"0-{num - 1}"
            raise ValueError(f"unknown class {c!r}; classes are: {names}") from None
    k = int(c)
    if not 0 <= k < num:
        raise ValueError(f"class {k} is out of range; this dataset has classes 0-{num - 1}")
    return k


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers summing to ``total`` proportional to ``weights`` (largest remainder)."""
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(np.int64)
    short = total - int(base.sum())
    order = np.argsort(-(exact - base), kind="stable")
    base[order[:short]] += 1
    return base


def select_classes(
    ds: ImageDataset | ImageRows,
    classes: Sequence[int | str],
    *,
    counts: Sequence[int] | None = None,
    ratio: Sequence[float] | None = None,
    n: int | None = None,
    seed: int = 0,
    relabel: bool = False,
    return_index: bool = False,
) -> ImageDataset | ImageRows | tuple[ImageDataset | ImageRows, np.ndarray]:
    """A seeded subset of some classes, in given counts or a given ratio.

    Parameters
    ----------
    ds : ImageDataset or ImageRows
        A labeled dataset, or a labeled view of one (then only its labels are
        read and the result is a view too).
    classes : sequence of int or str
        Class indices or names (digits are read as indices unless they are names).
    counts : sequence of int, optional
        Images to take from each class, in the order of ``classes``.
    ratio : sequence of float, optional
        Relative shares, e.g. ``(2, 1, 1)``. With ``n``: ``n`` images split in
        that ratio (largest remainder). Without ``n``: as many as the classes
        allow while keeping the ratio.
    n : int, optional
        Total images; without ``ratio`` they are split equally.
    seed : int
        Seed of the choice.
    relabel : bool
        Renumber the chosen classes 0..k-1 (in the order given) with matching
        class names. By default labels and class names stay those of ``ds``.
    return_index : bool
        Also return the chosen rows' positions in ``ds``.

    Returns
    -------
    ImageDataset or ImageRows
        The chosen rows in source order (of the type of ``ds``). With no
        counts, ratio or n: every image of the chosen classes.
    index : ndarray of shape (n_chosen,), int64
        With ``return_index``: their positions in ``ds``, increasing.

    Raises
    ------
    ValueError
        Unlabeled data, unknown classes, mismatched lengths, or a class with
        fewer images than asked for.
    """
    if ds.labels is None:
        raise ValueError("select_classes needs a labeled dataset")
    if not classes:
        raise ValueError("give at least one class")
    if counts is not None and (ratio is not None or n is not None):
        raise ValueError("give counts, or ratio and/or n, not both")
    ks = [resolve_class(ds, c) for c in classes]
    if len(set(ks)) != len(ks):
        raise ValueError(f"classes repeat: {list(classes)}")
    labels = ds.labels.numpy()
    rows = [np.flatnonzero(labels == k) for k in ks]
    avail = np.array([r.size for r in rows], dtype=np.int64)

    if counts is not None:
        if len(counts) != len(ks):
            raise ValueError(f"{len(counts)} counts for {len(ks)} classes")
        want = np.array([int(c) for c in counts], dtype=np.int64)
        if (want < 0).any():
            raise ValueError(f"counts must be >= 0, got {list(counts)}")
    elif ratio is not None or n is not None:
        w = np.ones(len(ks)) if ratio is None else np.asarray(ratio, dtype=np.float64)
        if w.shape != (len(ks),):
            raise ValueError(f"{w.size} ratio values for {len(ks)} classes")
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"ratio values must be >= 0 with a positive sum, got {list(w)}")
        if n is None:
            # The largest total that keeps the ratio within what each class has.
            scale = min(a / x for a, x in zip(avail, w, strict=True) if x > 0)
            want = np.floor(w * scale + 1e-9).astype(np.int64)
        else:
            if isinstance(n, bool) or int(n) != n or n < 0:
                raise ValueError(f"n must be a non-negative integer, got {n!r}")
            want = _apportion(int(n), w)
    else:
        want = avail

    short = [(k, a, x) for k, a, x in zip(ks, avail, want, strict=True) if x > a]
    if short:
        k, a, x = short[0]
        raise ValueError(
            f"class {ds.class_name(k)!r} has {a} images, fewer than the {x} asked for; "
            "lower n or the counts"
        )
    rng = np.random.default_rng(seed)
    chosen = np.sort(
        np.concatenate([_pick(rng, r, int(x)) for r, x in zip(rows, want, strict=True)])
    )
    out = ds.subset(chosen)
    if relabel:
        remap = np.full(ds.num_classes or 0, -1, dtype=np.int64)
        remap[ks] = np.arange(len(ks))
        out.labels = torch.from_numpy(remap[out.labels.numpy()])
        out.class_names = [ds.class_name(k) for k in ks]
    return (out, chosen.astype(np.int64)) if return_index else out


def parse_class_list(text: str) -> list[int | str]:
    """``"0,1,2"`` or ``"Coat,Bag"`` -> ``[0, 1, 2]`` / ``["Coat", "Bag"]`` (for CLI options).

    Digits become ints; anything else stays a name for :func:`select_classes`.

    Raises
    ------
    ValueError
        For an empty list or item, a negative index, or a class given twice.
    """
    items = [t.strip() for t in str(text).split(",")]
    if not str(text).strip() or any(not t for t in items):
        raise ValueError(f"classes must be a comma-separated list like 0,1,2, got {text!r}")
    # isascii: "²".isdigit() is true, but int("²") fails.
    out: list[int | str] = [int(t) if t.isascii() and t.isdigit() else t for t in items]
    negative = [t for t in items if t.startswith("-") and t[1:].isascii() and t[1:].isdigit()]
    if negative:
        raise ValueError(f"classes {text!r}: {negative[0]} is not a class; indices start at 0")
    if len(set(out)) < len(out):
        raise ValueError(f"classes {text!r}: a class is given twice")
    return out


def parse_ratio(text: str) -> list[float]:
    """``"2:1:1"`` (or ``"2,1,1"``) -> ``[2.0, 1.0, 1.0]`` (for CLI options).

    Raises
    ------
    ValueError
        Unless every part is a positive, finite number: a ratio part of 0 would
        ask for an empty class, and NaN or infinity for nothing sensible.
    """
    parts = str(text).replace(",", ":").split(":")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"ratio must look like 2:1:1, got {text!r}") from None
    bad = [p.strip() for p, v in zip(parts, vals, strict=True) if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(
            f"ratio {text!r}: every part must be a positive, finite number, got {bad[0]!r}"
        )
    if not math.isfinite(sum(vals)):
        raise ValueError(f"ratio {text!r}: the parts are too large; use small numbers like 2:1:1")
    return vals
