"""Property test of the data door: any array file gives a valid dataset or a one-line error.

Random images (dtypes with NaN and infinities, ranks 1-5, zero-size axes,
channel counts 0-5), random labels (lengths, dtypes, values) and random class
names are saved as ``.npy``/``.npz`` (labels also as a ``.npy`` or ``.csv``
file) and loaded with :func:`aelab.data.load_dataset`: the result must be a
valid uint8 NCHW :class:`ImageDataset` with labels in range, or a ``ValueError``
/ ``FileNotFoundError`` whose message is one line. Any other exception (a
TypeError, IndexError, a numpy or torch error) fails the test.
"""

import csv
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aelab.data import ImageDataset, load_dataset

IMAGE_DTYPES = [
    np.uint8,
    np.int8,
    np.int16,
    np.uint16,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.bool_,
]
LABEL_DTYPES = [
    np.uint8,
    np.int8,
    np.int16,
    np.int64,
    np.uint64,
    np.float32,
    np.float64,
    np.bool_,
    "<U4",
]


def _mostly(valid, rare):
    """Draw from ``valid`` about three times in four, else from ``rare``."""
    return st.one_of(valid, valid, valid, rare)


def _elements(draw, dtype):
    """Element strategy for an image array: in range for the dtype, or anything."""
    dtype = np.dtype(dtype)
    good = draw(_mostly(st.just(True), st.just(False)))
    if dtype.kind == "f":
        valid = st.floats(0, 1, width=dtype.itemsize * 8)
        rare = st.sampled_from([np.nan, np.inf, -np.inf, -0.5, 2.0, 255.0])
        return valid if good else st.one_of(valid, rare)
    if dtype.kind == "b":
        return st.booleans()
    info = np.iinfo(dtype)
    valid = st.integers(max(0, int(info.min)), min(255, int(info.max)))
    return valid if good else st.integers(int(info.min), int(info.max))


@st.composite
def image_arrays(draw):
    dtype = draw(st.sampled_from(IMAGE_DTYPES))
    rank = draw(st.sampled_from([3, 3, 3, 4, 4, 4, 4, 1, 2, 5]))
    side = st.sampled_from([1, 2, 3, 4, 5, 2, 3, 0])
    shape = [draw(side) for _ in range(rank)]
    if rank == 4 and draw(st.booleans()):
        shape[draw(st.sampled_from([1, 3]))] = draw(st.sampled_from([1, 2, 3, 4]))
    return draw(hnp.arrays(dtype, tuple(shape), elements=_elements(draw, dtype)))


@st.composite
def label_arrays(draw, n):
    dtype = np.dtype(draw(st.sampled_from(LABEL_DTYPES)))
    length = draw(_mostly(st.just(n), st.integers(0, 7)))
    shape = draw(st.sampled_from([(length,)] * 6 + [(length, 1), (length, 2), ()]))
    good = draw(_mostly(st.just(True), st.just(False)))
    if dtype.kind == "U":
        elements = st.text(alphabet="ab-=1 ", max_size=3)
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        top = draw(st.integers(0, 5))
        valid = st.integers(0, top)
        if dtype.kind == "f":
            rare = st.sampled_from([np.nan, np.inf, -1.0, 0.5, 99.0, 1e30])
            valid = valid.map(float)
        else:
            info = np.iinfo(dtype)
            rare = st.sampled_from([99, int(info.max), int(info.min)])
        elements = valid if good else st.one_of(valid, rare)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def cases(draw):
    images = draw(image_arrays())
    n = images.shape[0] if images.ndim else 0
    labels = draw(st.one_of(st.none(), label_arrays(n), label_arrays(n)))
    names = draw(
        st.none()
        | st.integers(0, 7).map(lambda m: [f"c{i}" for i in range(m)])
        | st.lists(st.text(alphabet="abcdef", max_size=2), max_size=6, unique=True)
        | st.lists(st.text(alphabet="abc", max_size=1), max_size=4)
        | st.lists(st.integers(0, 9), max_size=5, unique=True)
    )
    container = draw(st.sampled_from(["npz", "npz-xy", "npy", "npy+npy", "npy+csv"]))
    image_size = draw(
        st.none() | st.integers(1, 6) | st.tuples(st.integers(1, 6), st.integers(1, 6))
    )
    channels = draw(st.sampled_from([None, 1, 3]))
    fit = draw(st.sampled_from(["resize", "letterbox", "pad"]))
    return images, labels, names, container, image_size, channels, fit


def _save(folder: Path, images, labels, names, container) -> tuple[Path, Path | None]:
    """Write the case as files; returns (data path, labels file or None)."""
    if container.startswith("npz"):
        ik, lk = ("x", "y") if container == "npz-xy" else ("images", "labels")
        arrays = {ik: images}
        if labels is not None:
            arrays[lk] = labels
        if names is not None:
            arrays["class_names"] = np.array(names)
        path = folder / "d.npz"
        np.savez(path, **arrays)
        return path, None
    path = folder / "d.npy"
    np.save(path, images)
    if labels is None or container == "npy":
        return path, None
    if container == "npy+npy":
        np.save(folder / "y.npy", labels)
        return path, folder / "y.npy"
    with open(folder / "y.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["label"])
        w.writerows([[v] for v in np.atleast_1d(labels).reshape(-1).tolist()])
    return path, folder / "y.csv"


def _check_dataset(ds, image_size, channels) -> None:
    assert isinstance(ds, ImageDataset)
    assert ds.images.dtype == torch.uint8 and ds.images.ndim == 4
    n, c, h, w = ds.images.shape
    assert n > 0 and h > 0 and w > 0
    assert c in (1, 3) if channels is None else c == channels
    if image_size is not None:
        want = (image_size, image_size) if isinstance(image_size, int) else image_size
        assert (h, w) == tuple(want)
    assert len(ds.ids) == n
    if ds.labels is not None:
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (n,)
        lo, hi = int(ds.labels.min()), int(ds.labels.max())
        assert lo >= 0
        if ds.class_names is not None:
            assert hi < len(ds.class_names)
        else:  # the documented rule: at most half of the classes 0..max go unused
            assert hi + 1 <= 2 * len(torch.unique(ds.labels))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_any_array_file_loads_or_fails_with_a_message(case):
    images, labels, names, container, image_size, channels, fit = case
    with tempfile.TemporaryDirectory() as tmp:
        path, label_file = _save(Path(tmp), images, labels, names, container)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = load_dataset(
                    path,
                    labels=label_file,
                    image_size=image_size,
                    channels=channels,
                    fit=fit,
                    progress=False,
                )
        except (ValueError, FileNotFoundError) as e:
            msg = str(e)
            assert msg and "\n" not in msg, f"message not one line: {msg!r}"
            # Statistics (pytest --hypothesis-show-statistics): which doors refused.
            event(f"refused: {msg.split(': ', 1)[-1][:40]}")
            return
        _check_dataset(ds, image_size, channels)
        if images.ndim == 3 and images.dtype == np.uint8 and image_size is None and not channels:
            # Nothing to convert: the pixels come back exactly.
            assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
        event("loaded" + (" with labels" if ds.labels is not None else ""))
