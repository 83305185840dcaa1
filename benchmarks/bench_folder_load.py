"""Folder loading: aelab's load_dataset against a plain sequential Pillow loop.

Writes synthetic image folders to a temporary directory (small PNGs, and
camera-sized JPEGs), then times reading them at the model size with
``load_dataset`` (header pass + threaded decoding, JPEG draft downscaling) and
with the naive loop (open, convert, resize, stack) that it replaces.

    PYTHONPATH=src python benchmarks/bench_folder_load.py [--png 2000] [--jpeg 100]
    PYTHONPATH=src python benchmarks/bench_folder_load.py --smoke --out /tmp/smoke.json   # seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _results import add_arguments, mode_of, table, write_results
from aelab.data import load_dataset


def _write(folder: Path, n: int, size: tuple[int, int], fmt: str, rng: np.random.Generator) -> None:
    folder.mkdir(parents=True)
    w, h = size
    base = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    for i in range(n):
        # Smooth content (upscaled noise) so JPEG sizes are realistic.
        img = Image.fromarray(np.roll(base, i, axis=1)).resize((w, h), Image.Resampling.BILINEAR)
        img.save(folder / f"{i:05d}.{fmt.lower().replace('jpeg', 'jpg')}", format=fmt)


def _naive(folder: Path, size: int) -> np.ndarray:
    out = []
    for p in sorted(folder.iterdir()):
        with Image.open(p) as img:
            out.append(
                np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
            )
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--png", type=int, default=2000)
    ap.add_argument("--jpeg", type=int, default=100)
    add_arguments(ap, "bench_folder_load")
    args = ap.parse_args()
    if args.smoke:
        args.png, args.jpeg = 40, 2
    rng = np.random.default_rng(0)
    cases = [
        (f"{args.png} PNG 48x40 -> 32", args.png, (48, 40), "PNG", 32),
        (f"{args.jpeg} JPEG 2048x1536 -> 64", args.jpeg, (2048, 1536), "JPEG", 64),
    ]
    header = f"{'case':30} {'aelab s':>8} {'naive s':>8} {'naive/aelab':>12}"
    print(header)
    print("-" * len(header))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, n, size, fmt, target in cases:
            folder = Path(tmp) / fmt
            _write(folder, n, size, fmt, rng)
            t0 = time.perf_counter()
            ds = load_dataset(folder, image_size=target, channels=3, progress=False)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref = _naive(folder, target)
            t_naive = time.perf_counter() - t0
            assert len(ds) == len(ref) == n
            print(f"{label:30} {t_ours:8.2f} {t_naive:8.2f} {t_naive / t_ours:12.2f}")
            rows.append([label, f"{t_ours:.2f}", f"{t_naive:.2f}", f"{t_naive / t_ours:.2f}"])
    columns = ["case", "aelab s", "naive s", "naive/aelab"]
    write_results(
        args.out, "bench_folder_load", mode_of(args), tables={"load": table(columns, rows)}
    )


if __name__ == "__main__":
    main()
