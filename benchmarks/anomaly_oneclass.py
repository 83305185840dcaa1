"""One-class anomaly detection: aelab's default detector against baselines and published figures.

The standard protocol (Ruff et al. 2018, Golan & El-Yaniv 2018): for each
class of a data set, train on that class's training images only, score every
test image, and report the ROC AUC with that class as normal and all the
others as anomalies. The detector is ``ReconstructionDetector()`` with no
arguments but the seed: exactly what ``aelab anomaly fit`` and the study use.
Measured in the same run, on the same images:

- each part of the default score alone (reconstruction MSE, latent kNN,
  transformation head), from the same trained model;
- kNN (k=5) and Isolation Forest on the autoencoder's codes (detectors on
  features, as PyOD would run them);
- pixel kNN (k=5) on the raw images, which trains nothing;
- PCA reconstruction error, its component count chosen by the held-out
  likelihood of 10 % of the normal images, and the same with the count that is
  best on the test labels (an oracle no user has: an upper bound for PCA).

Data sets: Fashion-MNIST (10 classes, 6,000 training images each, the 10,000
test images), scikit-learn's digits upscaled to 32x32 (half of each class to
train, the other half to test), "photos": 64x64 RGB crops of six photos
bundled with scikit-image, each photo a class (2,000 training crops each, 300
fresh test crops each; a crop covers 10-50 % of its photo), and
"fashion-mnist-300": the Fashion-MNIST subset bundled with aelab (300 training
images a class, its 1,000 test images), a small set like digits.

``--protocol validation`` never touches the test images: Fashion-MNIST
classes are scored on 1,000 training images per class held out from
training, digits and photos on a part of their training half,
fashion-mnist-300 on 100 of its 300 training images a class. The default
detector was chosen on it (see benchmarks/README_anomaly.md), and
``--set NAME=VALUE`` (validation only) measures a changed detector.

    PYTHONPATH=src python benchmarks/anomaly_oneclass.py --seeds 0,1,2 --jobs 2
    PYTHONPATH=src python benchmarks/anomaly_oneclass.py --datasets digits --quick
    PYTHONPATH=src python benchmarks/anomaly_oneclass.py --smoke --out /tmp/smoke.json  # seconds
    PYTHONPATH=src python benchmarks/anomaly_oneclass.py --protocol validation --classes 0,1,2,3,4 \\
        --datasets fashion-mnist --set transforms=rotations+shifts
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _results import add_arguments, check_merge, mode_of, table, write_results
from aelab.anomaly import (
    KNNDistance,
    PCAReconstruction,
    ReconstructionDetector,
    combine_scores,
    flatten_images,
)

#: Published mean AUROC (%) on one-class Fashion-MNIST, none using external weights.
REFERENCES = {
    "Deep SVDD (Ruff et al. 2018)": 84.8,
    "CAE + OC-SVM (Golan & El-Yaniv 2018)": 91.7,
    "GEOM (Golan & El-Yaniv 2018)": 93.5,
    "DROC (Sohn et al. 2021)": 94.8,
}
FMNIST_TARGET = 95.0
DATASETS = ("fashion-mnist", "digits", "photos", "fashion-mnist-300")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
BASELINES = ("pixel kNN", "PCA", "PCA oracle", "latent kNN", "latent IForest")
#: --smoke: a few seconds on two digits classes; its figures measure nothing.
SMOKE = {"model": "convae_tiny", "epochs": 1, "min_steps": 0}
#: How the README's table names each data set.
LABELS = {"fashion-mnist": "Fashion-MNIST", "digits": "digits (32x32)",
          "photos": "photos (64x64 RGB)",
          "fashion-mnist-300": "Fashion-MNIST, 300 a class (bundled subset)"}  # fmt: skip


@dataclass
class OneClassSet:
    """Images (uint8, (n, C, H, W)) to train on and to score, with their classes."""

    name: str
    class_names: list[str]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


# ----------------------------------------------------------------------------- data sets


def fashion_mnist(protocol: str) -> OneClassSet:
    from aelab.data import load_dataset

    tr = load_dataset("fashion-mnist:train", progress=False)
    x, y = tr.images.numpy(), tr.labels.numpy()
    if protocol == "test":
        te = load_dataset("fashion-mnist:test", progress=False)
        return OneClassSet("fashion-mnist", list(tr.class_names), x, y,
                           te.images.numpy(), te.labels.numpy())  # fmt: skip
    # 1,000 training images per class stand in for the test set.
    rng = np.random.default_rng(2024)
    held = np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 1000, replace=False) for c in range(10)]
    )
    keep = np.setdiff1d(np.arange(len(y)), held)
    held = np.sort(held)
    return OneClassSet("fashion-mnist", list(tr.class_names), x[keep], y[keep], x[held], y[held])


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    t = torch.nn.functional.interpolate(
        torch.from_numpy(x).float(), size=(size, size), mode="bilinear", align_corners=False
    )
    return t.round().clamp(0, 255).to(torch.uint8).numpy()


def digits(protocol: str) -> OneClassSet:
    """scikit-learn's 1,797 8x8 digits, upscaled to 32x32; half of each class trains."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = _resize((d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None], 32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(7)
    train, test = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(y == c))
        half = len(rows) // 2
        if protocol == "test":
            train.append(rows[:half])
            test.append(rows[half:])
        else:  # two thirds of the training half train, one third stands in for the test set
            cut = (2 * half) // 3
            train.append(rows[:cut])
            test.append(rows[cut:half])
    a, b = np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
    return OneClassSet("digits", [str(c) for c in range(10)], x[a], y[a], x[b], y[b])


def _crops(photo: np.ndarray, k: int, rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """``k`` random square crops covering 10-50 % of the photo's area, resized to ``size``."""
    h, w = photo.shape[:2]
    t = torch.from_numpy(photo).permute(2, 0, 1).float()[None]
    out = np.empty((k, 3, size, size), np.uint8)
    for i in range(k):
        side = min(int(round(np.sqrt(rng.uniform(0.1, 0.5) * h * w))), h, w)
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = torch.nn.functional.interpolate(
            t[:, :, top : top + side, left : left + side], size=(size, size), mode="bilinear",
            antialias=True, align_corners=False,
        )  # fmt: skip
        out[i] = crop[0].round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def photos(protocol: str, n_train: int = 2000, n_test: int = 300, size: int = 64) -> OneClassSet:
    """Crops of six scikit-image photos, one class each; test crops are fresh draws."""
    import skimage.data

    seeds = (1, 2) if protocol == "test" else (3, 4)
    xs, ys, ts, tys = [], [], [], []
    for c, name in enumerate(PHOTOS):
        photo = getattr(skimage.data, name)()[..., :3]
        xs.append(_crops(photo, n_train, np.random.default_rng([seeds[0], c]), size))
        ts.append(_crops(photo, n_test, np.random.default_rng([seeds[1], c]), size))
        ys.append(np.full(n_train, c))
        tys.append(np.full(n_test, c))
    return OneClassSet("photos", list(PHOTOS), np.concatenate(xs), np.concatenate(ys),
                       np.concatenate(ts), np.concatenate(tys))  # fmt: skip


def fashion_mnist_300(protocol: str) -> OneClassSet:
    """The Fashion-MNIST subset bundled with aelab: 300 training images a class, a small set.

    The test protocol trains on the 300 and scores the subset's 1,000 test images
    (100 a class); the validation protocol trains on 200 of the 300 and scores the
    other 100 of each class. Read from the bundled file itself, so the set is the
    same whether or not the full Fashion-MNIST is installed.
    """
    from aelab.data.fashion_mnist import BUNDLED_PATH, CLASS_NAMES

    with np.load(BUNDLED_PATH, allow_pickle=False) as z:
        x, y = z["x_train"][:, None], z["y_train"].astype(np.int64)
        xt, yt = z["x_test"][:, None], z["y_test"].astype(np.int64)
    if protocol == "test":
        return OneClassSet("fashion-mnist-300", list(CLASS_NAMES), x, y, xt, yt)
    rng = np.random.default_rng(11)
    held = np.sort(np.concatenate(
        [rng.choice(np.flatnonzero(y == c), 100, replace=False) for c in range(10)]
    ))  # fmt: skip
    keep = np.setdiff1d(np.arange(len(y)), held)
    return OneClassSet("fashion-mnist-300", list(CLASS_NAMES), x[keep], y[keep], x[held], y[held])


LOADERS = {"fashion-mnist": fashion_mnist, "digits": digits, "photos": photos,
           "fashion-mnist-300": fashion_mnist_300}  # fmt: skip


# ----------------------------------------------------------------------------- one run


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s))


def run_class(ds: OneClassSet, c: int, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """Fit the detector on class ``c``; AUROC of it, its parts and every baseline."""
    from sklearn.ensemble import IsolationForest

    normal = ds.train_images[ds.train_labels == c]
    y = (ds.test_labels != c).astype(int)
    t0 = time.perf_counter()
    det = ReconstructionDetector(random_state=seed, verbose=False, **overrides).fit(normal)
    t_fit = time.perf_counter() - t0
    comps = det.score_components(ds.test_images)
    if len(det.score_parts_) > 1:
        default = combine_scores(comps, det.score_stats_)
    else:
        default = comps[det.score_parts_[0]]
    t_score = time.perf_counter() - t0 - t_fit
    auc = {"default": _auc(y, default)}
    auc.update({f"part {p}": _auc(y, comps[p]) for p in det.score_parts_})

    t1 = time.perf_counter()
    z_bank, z_test = det.encode(normal), det.encode(ds.test_images)
    auc["latent kNN"] = _auc(y, KNNDistance(5).fit(z_bank).decision_function(z_test))
    forest = IsolationForest(n_estimators=200, random_state=seed).fit(z_bank)
    auc["latent IForest"] = _auc(y, -forest.score_samples(z_test))
    px_bank, px_test = flatten_images(normal), flatten_images(ds.test_images)
    auc["pixel kNN"] = _auc(y, KNNDistance(5).fit(px_bank).decision_function(px_test))
    pca = PCAReconstruction(random_state=seed).fit(px_bank)
    by_count = pca.errors_by_count(px_test)
    auc["PCA"] = _auc(y, by_count[pca.n_components_])
    oracle = {n: _auc(y, by_count[n]) for n in pca.log_likelihood_}
    best_n = max(oracle, key=oracle.get)
    auc["PCA oracle"] = oracle[best_n]
    return {
        "dataset": ds.name, "class": c, "name": ds.class_names[c], "seed": seed,
        "auroc": auc, "pca_components": pca.n_components_, "pca_oracle_components": best_n,
        "epochs": det.epochs_, "n_train": int(len(normal)),
        "seconds": {"fit": t_fit, "score": t_score, "baselines": time.perf_counter() - t1},
    }  # fmt: skip


# ----------------------------------------------------------------------------- tables


def _mean_std(v: list[float]) -> str:
    m = 100 * np.mean(v)
    return f"{m:5.1f}" if len(v) < 2 else f"{m:5.1f}±{100 * np.std(v):3.1f}"


def print_table(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-class table (mean ± std over seeds), the mean row, and the target checks."""
    cols = list(rows[0]["auroc"])
    classes = sorted({r["class"] for r in rows})
    per = {c: [r for r in rows if r["class"] == c] for c in classes}
    seeds = sorted({r["seed"] for r in rows})
    print(f"\n{name}: AUROC (%) per normal class, mean ± std over seeds {seeds}")
    head = f"{'class':<16}" + "".join(f"{k[:15]:>16}" for k in cols)
    print(head + "\n" + "-" * len(head))
    for c in classes:
        cells = "".join(f"{_mean_std([r['auroc'][k] for r in per[c]]):>16}" for k in cols)
        print(f"{per[c][0]['name'][:15]:<16}" + cells)
    # The mean row: the mean over classes of each seed, then mean ± std over seeds.
    by_seed = {
        k: [np.mean([r["auroc"][k] for r in rows if r["seed"] == s]) for s in seeds] for k in cols
    }
    print("-" * len(head))
    print(f"{'mean':<16}" + "".join(f"{_mean_std(by_seed[k]):>16}" for k in cols))
    cls_mean = {k: {c: float(np.mean([r["auroc"][k] for r in per[c]])) for c in classes}
                for k in cols}  # fmt: skip
    mean = {k: float(np.mean(v)) for k, v in by_seed.items()}
    worst = min(
        cls_mean["default"][c] - max(cls_mean["PCA"][c], cls_mean["pixel kNN"][c]) for c in classes
    )
    beats = mean["default"] > max(mean["PCA"], mean["pixel kNN"])
    print(
        f"default beats PCA and pixel kNN on the mean: {'yes' if beats else 'NO'}; "
        f"worst class vs the better of the two: {100 * worst:+.1f} points "
        f"({'within' if worst >= -0.005 else 'MORE than'} 0.5 point)"
    )
    fits = [r["seconds"]["fit"] for r in rows]
    print(f"fit {np.mean(fits):.0f} s per class on average ({rows[0]['n_train']} images for "
          f"class {rows[0]['class']}, {rows[0]['epochs']} epochs)")  # fmt: skip
    return {"mean": mean, "std": {k: float(np.std(v)) for k, v in by_seed.items()},
            "class_mean": cls_mean, "worst_vs_better_baseline": worst, "beats_baselines": beats}  # fmt: skip


def _parse_sets(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: use NAME=VALUE, e.g. transforms=rotations+shifts")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _run_dataset(
    name: str, args: argparse.Namespace, seeds: list[int], overrides: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every (class, seed) of one data set, in this process or ``--jobs`` forked ones."""
    ds = LOADERS[name](args.protocol)
    classes = [0] if args.quick else (
        [int(c) for c in args.classes.split(",")] if args.classes
        else list(range(len(ds.class_names))))  # fmt: skip
    jobs = [(c, s) for s in seeds for c in classes]
    print(f"{name} ({args.protocol}): {len(classes)} classes x {len(seeds)} seeds, "
          f"{len(ds.test_images)} images scored, detector {overrides or 'defaults'}",
          flush=True)  # fmt: skip
    rows = []
    if args.jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("fork"),
                                 initializer=_worker_init, initargs=(args.threads,)) as pool:  # fmt: skip
            futures = [pool.submit(run_class, ds, c, s, overrides) for c, s in jobs]
            for f in futures:
                rows.append(f.result())
                _print_row(rows[-1])
    else:
        for c, s in jobs:
            rows.append(run_class(ds, c, s, overrides))
            _print_row(rows[-1])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--protocol", choices=("test", "validation"), default="test")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    p.add_argument("--classes", default="", help="comma-separated class indices (default all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the detector")
    p.add_argument(
        "--quick", action="store_true", help="class 0 of each set, seed 0: a check of minutes"
    )
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a ReconstructionDetector argument (validation protocol only)")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    p.add_argument("--jobs", type=int, default=1, help="classes run in parallel processes")
    p.add_argument("--merge", default="", metavar="A.json,B.json",
                   help="run nothing: join earlier results files (inside the repository) into "
                   "--out, which must be a new file, and print their tables")  # fmt: skip
    add_arguments(p, "anomaly_oneclass")
    args = p.parse_args()
    if args.merge:
        _merge(args)
        return
    overrides = _parse_sets(args.set)
    if overrides and args.protocol == "test":
        raise SystemExit("--set is for --protocol validation: the test table measures the default")
    if args.smoke:
        args.datasets, args.classes, args.seeds, overrides = "digits", "0,1", "0", dict(SMOKE)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    names = [n.strip() for n in args.datasets.split(",")]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown data set(s) {unknown}; choose from {', '.join(DATASETS)}")

    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name in names:
        rows = _run_dataset(name, args, seeds, overrides)
        results += rows
        summary[name] = print_table(name, rows)
    wall = time.perf_counter() - t_start
    _print_verdict(summary, args)
    print(f"wall time {wall / 60:.1f} min, load average {os.getloadavg()[0]:.1f} at the end")
    payload = {"args": vars(args), "overrides": overrides, "results": results,
               "summary": summary, "wall_seconds": wall, "references": REFERENCES}  # fmt: skip
    write_results(args.out, "anomaly_oneclass", mode_of(args),
                  tables={"auroc": readme_table(results)}, data=payload)  # fmt: skip


def _merge(args: argparse.Namespace) -> None:
    """Several results files (e.g. seed 0, then seeds 1 and 2) as one: printed as one run
    would print them, and written to a new ``--out`` that names its inputs."""
    inputs = [p.strip() for p in args.merge.split(",") if p.strip()]
    check_merge(inputs, args.out)
    results: list[dict[str, Any]] = []
    for path in inputs:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        results += (record.get("data") or record)["results"]
    summary = {}
    for name in dict.fromkeys(r["dataset"] for r in results):
        summary[name] = print_table(name, [r for r in results if r["dataset"] == name])
    _print_verdict(summary, args)
    write_results(args.out, "anomaly_oneclass", "full", inputs=inputs,
                  tables={"auroc": readme_table(results)},
                  data={"results": results, "summary": summary, "references": REFERENCES})  # fmt: skip


def _seeds_label(seeds: list[int]) -> str:
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"seeds {seeds[0]}-{seeds[-1]}"
    return "seeds " + ",".join(map(str, seeds))


def readme_table(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The README's table: per data set, mean ± std over seeds of the mean AUROC (%) over
    classes, for the default and each baseline, and the published Fashion-MNIST figures."""
    rows = []
    for name in dict.fromkeys(r["dataset"] for r in results):
        mine = [r for r in results if r["dataset"] == name]
        seeds = sorted({r["seed"] for r in mine})
        n_classes = len({r["class"] for r in mine})
        cells = []
        for k in ("default", *BASELINES):
            v = [np.mean([r["auroc"][k] for r in mine if r["seed"] == s]) for s in seeds]
            cells.append(f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}")
        cells[0] = f"**{cells[0]}**"
        published = ", ".join(f"{k.split(' (')[0]} {v}" for k, v in REFERENCES.items())
        label = f"{LABELS.get(name, name)}, {n_classes} classes, {_seeds_label(seeds)}"
        rows.append([label, *cells, published if name == "fashion-mnist" else ""])
    columns = ["data set", "**default**", *BASELINES, "published (no external weights)"]
    return table(columns, rows)


def _print_row(r: dict[str, Any]) -> None:
    a = r["auroc"]
    parts = "  ".join(f"{k} {100 * v:.1f}" for k, v in a.items())
    print(f"  {r['dataset']} class {r['class']} seed {r['seed']}: {parts}  "
          f"({r['seconds']['fit']:.0f}s fit, {r['seconds']['score']:.0f}s score)", flush=True)  # fmt: skip


def _print_verdict(summary: dict[str, Any], args: argparse.Namespace) -> None:
    fm = summary.get("fashion-mnist")
    if fm is None:
        return
    m = 100 * fm["mean"]["default"]
    print("\nFashion-MNIST one-class, mean AUROC (%): published without external weights")
    for k, v in REFERENCES.items():
        print(f"  {k:<40} {v:5.1f}   aelab default / it = {m / v:.3f}")
    full = args.protocol == "test" and not args.classes and not args.quick
    print(f"  {'aelab default (this run)':<40} {m:5.1f}   target {FMNIST_TARGET}: "
          f"{'met' if m >= FMNIST_TARGET else 'NOT met'}"
          f"{'' if full else ' (partial protocol: not comparable)'}")  # fmt: skip


if __name__ == "__main__":
    main()
