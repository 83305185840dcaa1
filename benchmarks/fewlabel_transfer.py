"""Does the default few-label recipe hold where nobody tuned it? Data sets other than Fashion-MNIST.

``fewlabel.py`` is the table of record on Fashion-MNIST, where the default
recipe was tuned. This script runs, on data sets nobody tuned for, what a user
runs with no options, through the same task functions as the CLI:

- ``plain, scratch``   ``aelab finetune --recipe plain`` from a random init
- ``default``          ``aelab pretrain`` then ``aelab finetune --init`` (the default recipe)
- ``default, 3 passes`` the same with ``min_epoch_steps=0``: the recipe before
  its epochs had a floor of 250 steps (3 passes over a small unlabeled pool)

Data sets (the images of ``anomaly_oneclass.py``):

- ``digits``: scikit-learn's 1,797 digits upscaled to 32x32, half of each
  class for training (about 90 per class, so ``--labels`` 20 per class), the
  other half for the test;
- ``photos``: 32x32 RGB crops of six scikit-image photos, one class each
  (``--photo-train`` crops per class to train, 200 fresh ones per class to test).

Every seed changes the labelled images, the initialisation and the batches;
the table prints mean and standard deviation of the test accuracy and the
minutes per run.

Usage::

    PYTHONPATH=src python benchmarks/fewlabel_transfer.py --datasets digits --seeds 0,1,2
    PYTHONPATH=src python benchmarks/fewlabel_transfer.py --datasets photos --seeds 0 --labels 50
    PYTHONPATH=src python benchmarks/fewlabel_transfer.py --smoke --out /tmp/smoke.json  # seconds
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# benchmarks/ is on the path when run as a script
from _results import add_arguments, mode_of, table, write_results
from anomaly_oneclass import digits, photos

ROWS = ("plain, scratch", "default", "default, 3 passes")
#: --smoke: one epoch of each step (the recipe's floor of steps off); measures nothing.
SMOKE_PRETRAIN = {"epochs": 1}
SMOKE_FINETUNE = {"epochs": 1, "min_epoch_steps": 0}


def _dataset(name: str, photo_train: int) -> tuple[Any, Any]:
    import torch

    from aelab.data import ImageDataset

    ds = digits("test") if name == "digits" else photos("test", photo_train, 200, size=32)

    def make(x: np.ndarray, y: np.ndarray) -> ImageDataset:
        return ImageDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)),
                            [str(i) for i in range(len(x))], list(ds.class_names))  # fmt: skip

    return make(ds.train_images, ds.train_labels), make(ds.test_images, ds.test_labels)


def run_seed(
    train: Any, test: Any, seed: int, args: argparse.Namespace
) -> dict[str, tuple[float, float]]:
    """Test accuracy (%) and minutes of each row for one seed."""
    from aelab.tasks import run_evaluate, run_finetune, run_pretrain

    split = {"labels_per_class": args.labels, "val_per_class": args.val, "seed": seed,
             "device": args.device, "progress": False}  # fmt: skip
    out: dict[str, tuple[float, float]] = {}
    pre_extra = SMOKE_PRETRAIN if args.smoke else {}
    ft_extra = SMOKE_FINETUNE if args.smoke else {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_finetune(train, tmp, name="plain", recipe="plain", **split, **ft_extra)
        out["plain, scratch"] = (
            100 * run_evaluate(test, Path(tmp) / "plain").accuracy,
            (time.perf_counter() - t0) / 60,
        )
        t0 = time.perf_counter()
        run_pretrain(train, tmp, seed=seed, device=args.device, progress=False, **pre_extra)
        pre = (time.perf_counter() - t0) / 60
        for row, extra in (("default", {}), ("default, 3 passes", {"min_epoch_steps": 0})):
            t0 = time.perf_counter()
            run_finetune(train, tmp, init=Path(tmp) / "pretrain", name=row.replace(", ", "-"),
                         **split, **{**ft_extra, **extra})  # fmt: skip
            acc = run_evaluate(test, Path(tmp) / row.replace(", ", "-")).accuracy
            out[row] = (100 * acc, pre + (time.perf_counter() - t0) / 60)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )  # fmt: skip
    p.add_argument("--datasets", default="digits,photos", help="comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated")
    p.add_argument("--labels", type=int, default=20, help="labelled images per class")
    p.add_argument("--val", type=int, default=10, help="validation images per class")
    p.add_argument("--photo-train", type=int, default=300, help="training crops per photo")
    p.add_argument("--device", default="auto")
    add_arguments(p, "fewlabel_transfer")
    args = p.parse_args()
    if args.smoke:
        args.datasets, args.seeds, args.labels, args.val = "digits", "0", 5, 2
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[str, list[list[float]]]] = {}
    cells = []
    for name in args.datasets.split(","):
        rows: dict[str, list[list[float]]] = {r: [] for r in ROWS}
        train, test = _dataset(name, args.photo_train)  # the same images for every seed
        for seed in seeds:
            for row, (acc, minutes) in run_seed(train, test, seed, args).items():
                rows[row].append([acc, minutes])
                print(
                    f"  {name} seed {seed}: {row:<18} {acc:5.1f} %  {minutes:4.1f} min", flush=True
                )
        results[name] = rows
        print(f"\n{name}: {args.labels} labels per class, {len(seeds)} seed(s)")
        print(f"{'row':<20}{'test accuracy %':>18}{'min/run':>9}")
        for row, v in rows.items():
            a = np.array(v)
            print(f"{row:<20}{a[:, 0].mean():>11.1f} ± {a[:, 0].std():<4.1f}{a[:, 1].mean():>9.1f}")
        gain = np.array(rows["default"])[:, 0] - np.array(rows["plain, scratch"])[:, 0]
        print(
            f"default - plain, scratch: {gain.mean():+.1f} points (per seed {np.round(gain, 1)})\n"
        )
        cells.append(_table_row(name, seeds, rows, gain, args.labels))
    columns = ["data set (labels per class)", "plain, scratch", "**default** (pre-training + FixMatch)",
               "the recipe before (3 passes)", "default - plain", "minutes per run (plain / default)"]  # fmt: skip
    write_results(args.out, "fewlabel_transfer", mode_of(args),
                  tables={"transfer": table(columns, cells)},
                  data={"args": vars(args), "results": results})  # fmt: skip


def _table_row(name: str, seeds: list[int], rows: dict[str, list[list[float]]], gain: np.ndarray,
               labels: int) -> list[str]:  # fmt: skip
    """One data set's row as the README shows it: accuracy mean ± sd over seeds, the gain per
    seed, minutes per run."""

    def acc(row: str) -> str:
        a = np.array(rows[row])[:, 0]
        return f"{a.mean():.1f}" + (f" ± {a.std():.1f}" if len(a) > 1 else "")

    seed_txt = f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ",".join(map(str, seeds))
    per_seed = f" ({', '.join(f'{g:+.1f}' for g in gain)})" if len(gain) > 1 else ""
    minutes = f"{np.array(rows['plain, scratch'])[:, 1].mean():.1f} / {np.array(rows['default'])[:, 1].mean():.1f}"
    return [f"{name}, {labels} per class, {seed_txt}", acc("plain, scratch"), f"**{acc('default')}**",
            acc("default, 3 passes"), f"**{gain.mean():+.1f}**{per_seed}", minutes]  # fmt: skip


if __name__ == "__main__":
    main()
