"""Does the default few-label recipe hold where nobody tuned it? Data sets other than Fashion-MNIST.

``fewlabel.py`` is the table of record on Fashion-MNIST, where the default
recipe was tuned. This script runs, on data sets nobody tuned for, what a user
runs with no options, through the same task functions as the CLI:

- ``plain, scratch``   ``aelab finetune --recipe plain`` from a random init
- ``default``          ``aelab pretrain`` then ``aelab finetune --init`` (the default recipe)
- ``default, 3 passes`` the same with ``min_epoch_steps=0``: the recipe before
  its epochs had a floor of 250 steps (3 passes over a small unlabeled pool)
- ``estimator``        :class:`aelab.estimators.FewLabelClassifier` (default
  recipe) fitted on the same training images and seed, ``y`` the class of the
  images the ``default`` row holds as labelled or validation images and -1 for
  every other one, holding out ``--val`` per class of them for validation
  (``finetune__val_per_class``). The label budget, the pre-training and the
  recipe are the CLI's; which of those labelled images validate is the
  estimator's own seeded draw among them, so the row agrees with ``default``
  within a split's noise, not bit for bit (``tests/test_estimators.py`` checks
  the bit-for-bit cases). Its table is ``estimator``, beside the default row.

Data sets (the images of ``anomaly_oneclass.py``):

- ``digits``: scikit-learn's 1,797 digits upscaled to 32x32, half of each
  class for training (about 90 per class, so ``--labels`` 20 per class), the
  other half for the test;
- ``photos``: 32x32 RGB crops of six scikit-image photos, one class each
  (``--photo-train`` crops per class to train, 200 fresh ones per class to test).

Every seed changes the labelled images, the initialisation and the batches;
the table prints mean and standard deviation of the test accuracy and the
minutes per run.

``--rows`` picks the rows to run by key (plain, default, 3-passes, estimator);
a row not run reads "not run" in the tables.

Usage::

    PYTHONPATH=src python benchmarks/fewlabel_transfer.py --datasets digits --seeds 0,1,2
    PYTHONPATH=src python benchmarks/fewlabel_transfer.py --datasets photos --seeds 0 --labels 50
    PYTHONPATH=src python benchmarks/fewlabel_transfer.py --datasets digits --seeds 0 --rows estimator \\
        --out benchmarks/results_fewlabel_transfer_estimator.json
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

ROWS = ("plain, scratch", "default", "default, 3 passes", "estimator")
NOT_RUN = "not run"
#: ``--rows`` names a row by its key (the rows' own names hold commas).
ROW_KEYS = {"plain": ROWS[0], "default": ROWS[1], "3-passes": ROWS[2], "estimator": ROWS[3]}
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
    """Test accuracy (%) and minutes of each row of ``args.rows`` for one seed."""
    from aelab.tasks import run_evaluate, run_finetune, run_pretrain

    split = {"labels_per_class": args.labels, "val_per_class": args.val, "seed": seed,
             "device": args.device, "progress": False}  # fmt: skip
    out: dict[str, tuple[float, float]] = {}
    pre_extra = SMOKE_PRETRAIN if args.smoke else {}
    ft_extra = SMOKE_FINETUNE if args.smoke else {}
    with tempfile.TemporaryDirectory() as tmp:
        if "plain, scratch" in args.rows:
            t0 = time.perf_counter()
            run_finetune(train, tmp, name="plain", recipe="plain", **split, **ft_extra)
            out["plain, scratch"] = (
                100 * run_evaluate(test, Path(tmp) / "plain").accuracy,
                (time.perf_counter() - t0) / 60,
            )
        cli = [r for r in ("default", "default, 3 passes") if r in args.rows]
        if cli:
            t0 = time.perf_counter()
            run_pretrain(train, tmp, seed=seed, device=args.device, progress=False, **pre_extra)
            pre = (time.perf_counter() - t0) / 60
        for row in cli:
            extra = {"min_epoch_steps": 0} if row == "default, 3 passes" else {}
            t0 = time.perf_counter()
            run_finetune(train, tmp, init=Path(tmp) / "pretrain", name=row.replace(", ", "-"),
                         **split, **{**ft_extra, **extra})  # fmt: skip
            acc = run_evaluate(test, Path(tmp) / row.replace(", ", "-")).accuracy
            out[row] = (100 * acc, pre + (time.perf_counter() - t0) / 60)
    if "estimator" in args.rows:
        out["estimator"] = _estimator_row(train, test, seed, args)
    return out


def _estimator_row(
    train: Any, test: Any, seed: int, args: argparse.Namespace
) -> tuple[float, float]:
    """Accuracy (%) and minutes of FewLabelClassifier on the default row's images, labels and seed.

    ``y`` labels the images the CLI's split labels (``--labels`` per class) or
    validates with (``--val`` per class) and is -1 elsewhere; the estimator
    holds out ``--val`` per class of them, as the CLI holds out ``val_per_class``.
    """
    from aelab.data import split_indices
    from aelab.estimators import FewLabelClassifier

    lab_idx, _, val_idx = split_indices(train, labels_per_class=args.labels,
                                        val_per_class=args.val, seed=seed)  # fmt: skip
    assert lab_idx is not None
    y = np.full(len(train), -1, dtype=np.int64)
    known = np.concatenate([lab_idx, val_idx])
    y[known] = train.labels.numpy()[known]
    smoke = {f"pretrain__{k}": v for k, v in SMOKE_PRETRAIN.items()} | {
        f"finetune__{k}": v for k, v in SMOKE_FINETUNE.items()
    }
    est = FewLabelClassifier(random_state=seed, device=args.device,
                             finetune__val_per_class=args.val, **(smoke if args.smoke else {}))  # fmt: skip
    t0 = time.perf_counter()
    est.fit(train.images.numpy(), y)
    minutes = (time.perf_counter() - t0) / 60
    return 100 * est.score(test.images.numpy(), test.labels.numpy()), minutes


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1],
    )  # fmt: skip
    p.add_argument("--datasets", default="digits,photos", help="comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated")
    p.add_argument("--rows", default=",".join(ROW_KEYS),
                   help="comma-separated rows to run (default: all): plain = plain, scratch; "
                   "3-passes = default, 3 passes")  # fmt: skip
    p.add_argument("--labels", type=int, default=20, help="labelled images per class")
    p.add_argument("--val", type=int, default=10, help="validation images per class")
    p.add_argument("--photo-train", type=int, default=300, help="training crops per photo")
    p.add_argument("--device", default="auto")
    add_arguments(p, "fewlabel_transfer")
    args = p.parse_args()
    args.rows = _rows(p, args.rows)
    if args.smoke:
        args.datasets, args.seeds, args.labels, args.val = "digits", "0", 5, 2
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[str, list[list[float]]]] = {}
    cells, est_cells = [], []
    for name in args.datasets.split(","):
        rows: dict[str, list[list[float]]] = {r: [] for r in args.rows}
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
        cells.append(_table_row(name, seeds, rows, args.labels))
        est_cells.append(_estimator_table_row(name, seeds, rows, args.labels))
    columns = ["data set (labels per class)", "plain, scratch", "**default** (pre-training + FixMatch)",
               "the recipe before (3 passes)", "default - plain", "minutes per run (plain / default)"]  # fmt: skip
    est_columns = ["data set (labels per class)", "**default** (aelab pretrain, finetune --init)",
                   "FewLabelClassifier (y = -1 unlabeled)", "minutes per run (default / estimator)"]  # fmt: skip
    write_results(args.out, "fewlabel_transfer", mode_of(args),
                  tables={"transfer": table(columns, cells), "estimator": table(est_columns, est_cells)},
                  data={"args": vars(args), "results": results})  # fmt: skip


def _rows(p: argparse.ArgumentParser, text: str) -> list[str]:
    """The rows ``--rows`` names by key, in the table's order (one line, exit 2, for an unknown one)."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ROW_KEYS]
    if unknown or not keys:
        p.error(f"--rows: unknown row {unknown[0] if unknown else text!r}; "
                f"give some of {','.join(ROW_KEYS)}")  # fmt: skip
    return [row for key, row in ROW_KEYS.items() if key in keys]


def _acc(rows: dict[str, list[list[float]]], row: str) -> str:
    """Accuracy mean ± sd over seeds (``not run`` for a row ``--rows`` left out)."""
    if row not in rows:
        return NOT_RUN
    a = np.array(rows[row])[:, 0]
    return f"{a.mean():.1f}" + (f" ± {a.std():.1f}" if len(a) > 1 else "")


def _bold(cell: str) -> str:
    return cell if cell == NOT_RUN else f"**{cell}**"


def _minutes(rows: dict[str, list[list[float]]], *names: str) -> str:
    return " / ".join(f"{np.array(rows[r])[:, 1].mean():.1f}" if r in rows else NOT_RUN
                      for r in names)  # fmt: skip


def _label(name: str, seeds: list[int], labels: int) -> str:
    seed_txt = f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ",".join(map(str, seeds))
    return f"{name}, {labels} per class, {seed_txt}"


def _table_row(name: str, seeds: list[int], rows: dict[str, list[list[float]]],
               labels: int) -> list[str]:  # fmt: skip
    """One data set's row as the README shows it: accuracy mean ± sd over seeds, the gain per
    seed, minutes per run."""
    if "default" in rows and "plain, scratch" in rows:
        gain = np.array(rows["default"])[:, 0] - np.array(rows["plain, scratch"])[:, 0]
        print(f"default - plain, scratch: {gain.mean():+.1f} points (per seed {np.round(gain, 1)})")
        per_seed = f" ({', '.join(f'{g:+.1f}' for g in gain)})" if len(gain) > 1 else ""
        gain_txt = f"**{gain.mean():+.1f}**{per_seed}"
    else:
        gain_txt = NOT_RUN
    return [_label(name, seeds, labels), _acc(rows, "plain, scratch"),
            _bold(_acc(rows, "default")), _acc(rows, "default, 3 passes"), gain_txt,
            _minutes(rows, "plain, scratch", "default")]  # fmt: skip


def _estimator_table_row(name: str, seeds: list[int], rows: dict[str, list[list[float]]],
                         labels: int) -> list[str]:  # fmt: skip
    """The estimator beside the default row: accuracy of each and minutes per run."""
    return [_label(name, seeds, labels), _bold(_acc(rows, "default")), _acc(rows, "estimator"),
            _minutes(rows, "default", "estimator")]  # fmt: skip


if __name__ == "__main__":
    main()
