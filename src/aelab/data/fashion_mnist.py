"""Fashion-MNIST: the Debian package's IDX files, or the bundled subset.

The full set (60 000 train + 10 000 test grayscale 28x28 images, 10 classes)
comes from the Debian package ``dataset-fashion-mnist``
(``apt-get install -y dataset-fashion-mnist``), which installs gzipped IDX
files under ``/usr/share/datasets/fashion-mnist``; the ``AELAB_FASHION_MNIST_DIR``
environment variable points elsewhere. When those files are absent aelab falls
back, with a warning, to a seeded stratified subset shipped inside the package
(3 000 train + 1 000 test images; see ``_bundled/README.md``).

Ids are ``"<split>-<row>"`` with the row in the full set's file, so the same
image has the same id whether it came from the full set or the subset.
"""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from aelab.data.dataset import ImageDataset

CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
SPLITS = ("train", "test", "all")
INSTALL_HINT = "apt-get install -y dataset-fashion-mnist"

#: Where the Debian package puts the IDX files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The subset shipped with aelab.
BUNDLED_PATH = Path(__file__).parent / "_bundled" / "fashion_mnist_subset.npz"

_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IDX_UBYTE = 0x08


def fashion_mnist_dir() -> Path:
    """The folder searched for the IDX files (``AELAB_FASHION_MNIST_DIR`` or the Debian path)."""
    return Path(os.environ.get("AELAB_FASHION_MNIST_DIR", DEBIAN_DIR))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions (gzipped or not)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = bytearray(f.read())  # writable, so torch can share it
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read the IDX file ({e})") from None
    if len(data) < 4 + 4 * ndim or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE or data[3] != ndim:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes with {ndim} dimension(s)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {body.size} bytes (truncated?)")
    return body.reshape(shape)


def _have_idx(folder: Path) -> bool:
    return all((folder / f).is_file() for pair in _FILES.values() for f in pair)


def _from_idx(folder: Path, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img_name, lab_name = _FILES[part]
    images = _read_idx(folder / img_name, 3)
    labels = _read_idx(folder / lab_name, 1)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} {part} images but {len(labels)} labels")
    return images, labels, np.arange(len(images))


def _from_bundled(path: Path, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z[f"x_{part}"], z[f"y_{part}"], z[f"idx_{part}"]


def load_fashion_mnist(split: str = "train") -> ImageDataset:
    """Fashion-MNIST as 1x28x28 uint8 images with labels 0-9.

    Parameters
    ----------
    split : {"train", "test", "all"}
        ``"all"`` is train followed by test.

    Returns
    -------
    ImageDataset
        Images of shape (n_samples, 1, 28, 28); ids ``"train-<row>"`` / ``"test-<row>"``.

    Raises
    ------
    FileNotFoundError
        When neither the IDX files nor the bundled subset are present.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use one of {', '.join(SPLITS)}")
    folder = fashion_mnist_dir()
    if _have_idx(folder):
        reader, source = _from_idx, folder
    elif BUNDLED_PATH.is_file():
        warnings.warn(
            f"Fashion-MNIST not found in {folder}; using the subset bundled with aelab "
            "(3000 train + 1000 test images). For the full 70 000 images run: "
            f"{INSTALL_HINT}",
            stacklevel=3,
        )
        reader, source = _from_bundled, BUNDLED_PATH
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {folder} and the bundled subset is missing; "
            f"install it with: {INSTALL_HINT}"
        )
    parts = ["train", "test"] if split == "all" else [split]
    xs, ys, ids = [], [], []
    for part in parts:
        x, y, rows = reader(source, part)  # type: ignore[arg-type]
        xs.append(x)
        ys.append(y)
        ids.extend(f"{part}-{int(r)}" for r in rows)
    images = np.concatenate(xs) if len(xs) > 1 else xs[0]
    labels = np.concatenate(ys) if len(ys) > 1 else ys[0]
    return ImageDataset(
        images=torch.from_numpy(np.ascontiguousarray(images)[:, None]),
        labels=torch.from_numpy(labels.astype(np.int64)),
        ids=ids,
        class_names=list(CLASS_NAMES),
    )
