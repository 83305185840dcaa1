"""Write the Fashion-MNIST subset shipped with aelab (src/aelab/data/_bundled/).

A seeded, stratified sample of the Debian package's IDX files
(``apt-get install -y dataset-fashion-mnist``): by default 300 train and 100
test images per class, stored as a compressed ``.npz`` with arrays
``x_train`` (N, 28, 28) uint8, ``y_train`` (N,) uint8, ``idx_train`` (N,) int32
(row in the full file), the same for ``test``, and ``class_names``.

    PYTHONPATH=src python scripts/make_bundled_subset.py [--train-per-class 300]
        [--test-per-class 100] [--seed 0] [--out src/aelab/data/_bundled/fashion_mnist_subset.npz]
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from aelab.data import fashion_mnist as fm
from aelab.files import write_bytes

MAX_BYTES = 3_000_000


def stratified_rows(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` rows of each class, chosen by ``rng``, in file order."""
    rows = [
        rng.choice(np.flatnonzero(labels == k), size=per_class, replace=False) for k in range(10)
    ]
    return np.sort(np.concatenate(rows))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--train-per-class", type=int, default=300)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=fm.BUNDLED_PATH)
    args = ap.parse_args()

    folder = fm.fashion_mnist_dir()
    if not fm._have_idx(folder):
        raise SystemExit(f"Fashion-MNIST IDX files not found in {folder}; run: {fm.INSTALL_HINT}")
    rng = np.random.default_rng(args.seed)
    arrays: dict[str, np.ndarray] = {}
    for part, per_class in (("train", args.train_per_class), ("test", args.test_per_class)):
        x, y, _ = fm._from_idx(folder, part)
        rows = stratified_rows(y, per_class, rng)
        arrays[f"x_{part}"] = x[rows]
        arrays[f"y_{part}"] = y[rows]
        arrays[f"idx_{part}"] = rows.astype(np.int32)
    arrays["class_names"] = np.array(fm.CLASS_NAMES)

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    data = buf.getvalue()
    if len(data) > MAX_BYTES:
        raise SystemExit(
            f"subset is {len(data):,} bytes, over the {MAX_BYTES:,} limit; take fewer images"
        )
    write_bytes(args.out, data)
    n_train, n_test = len(arrays["y_train"]), len(arrays["y_test"])
    print(f"wrote {args.out}: {n_train} train + {n_test} test images, {len(data):,} bytes")


if __name__ == "__main__":
    main()
