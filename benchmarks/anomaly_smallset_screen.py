"""Screen the small-set anomaly score on the validation protocol: one fit, every candidate.

For each (data set, class, seed) two detectors are fitted once, the way
``ReconstructionDetector`` fits them: the plain autoencoder of the small-set
score (``score="mse"``) and the model with the quarter-turn head of the
large-set score (``score="mse+latent+transform"``). Every candidate score is
then read from those two fitted models and from the raw pixels, with no
refitting:

- ``mse``: the plain model's reconstruction error (today's small-set default);
- ``mse(head)``, ``latent``, ``transform``: the parts of the head model;
- ``pixel``: mean distance (k = 5) of the image's pixels to those of all the
  normal images, the held-out ones scored leave-one-out; ``pixel(train)``:
  the same against the training part only (the bank ``latent`` uses);
- sums of parts, each standardised by its mean and spread on the held-out
  normal images (:func:`aelab.anomaly.combine_scores`), exactly as the
  detector combines them;
- the baselines of ``anomaly_oneclass.py``: pixel kNN on all normals (equal
  to ``pixel`` on the scored images) and PCA.

Only the validation protocol of ``anomaly_oneclass.py`` is read (held-out
training images stand in for the test set): the choice of the default is
made here, and the test table is run once afterwards with
``anomaly_oneclass.py``.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/anomaly_smallset_screen.py \\
        --datasets digits --seeds 0 --out results_anomaly_smallset_screen.json
    PYTHONPATH=src python benchmarks/anomaly_smallset_screen.py --smoke --out /tmp/s.json
    # several runs (e.g. one per data set) as one results file
    python benchmarks/anomaly_smallset_screen.py --merge a.json,b.json --out merged.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from _results import REPO, add_arguments, mode_of, table, write_results
from aelab.anomaly import (
    KNNDistance,
    PCAReconstruction,
    ReconstructionDetector,
    combine_scores,
    flatten_images,
    knn_distance,
    score_stats,
)
from aelab.anomaly.fitting import split_calibration
from anomaly_oneclass import LOADERS, OneClassSet

SMALL_SETS = ("digits", "fashion-mnist-300")
#: Standardised sums screened (parts as named in the module docstring).
COMBOS = (
    "mse+pixel", "mse+pixel(train)", "mse(head)+pixel", "mse(head)+latent",
    "mse(head)+latent+transform", "mse(head)+pixel+latent", "mse(head)+pixel+transform",
    "mse(head)+pixel+latent+transform", "mse+mse(head)+pixel",
)  # fmt: skip
SINGLES = ("mse", "mse(head)", "latent", "transform", "pixel", "pixel(train)")
BASELINES = ("pixel kNN", "PCA")
#: --smoke: a few seconds on two digits classes; its figures measure nothing.
SMOKE = {"model": "convae_tiny", "epochs": 1, "min_steps": 0}


def _parts(
    normal: np.ndarray, test: np.ndarray, seed: int, overrides: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Every part on the held-out normals and on the scored images, and the fit times."""
    plain = ReconstructionDetector(score="mse", random_state=seed, verbose=False, **overrides)
    head = ReconstructionDetector(
        score="mse+latent+transform", random_state=seed, verbose=False, **overrides
    )
    times = {}
    for name, det in (("plain", plain), ("head", head)):
        t0 = time.perf_counter()
        det.fit(normal)
        times[name] = time.perf_counter() - t0
    # Both detectors hold out the same rows (same count, same seed).
    assert plain.n_calibration_ == head.n_calibration_
    rows_tr, rows_cal = split_calibration(len(normal), plain.n_calibration_, seed)
    cal_img = normal[rows_cal]
    cal, out = {}, {}
    for imgs, dest in ((cal_img, cal), (test, out)):
        dest["mse"] = plain.score_components(imgs)["mse"]
        h = head.score_components(imgs, "mse+latent+transform")
        dest.update({"mse(head)": h["mse"], "latent": h["latent"], "transform": h["transform"]})
    px, px_test = flatten_images(normal), flatten_images(test)
    # All normals as the bank; a held-out normal is not its own neighbour.
    cal["pixel"] = knn_distance(px, px, 5, exclude_self=True)[rows_cal]
    out["pixel"] = knn_distance(px_test, px, 5)
    cal["pixel(train)"] = knn_distance(px[rows_cal], px[rows_tr], 5)
    out["pixel(train)"] = knn_distance(px_test, px[rows_tr], 5)
    return cal, out, times


def run_class(ds: OneClassSet, c: int, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """AUROC of every candidate score for normal class ``c`` (one fit of each model)."""
    normal = ds.train_images[ds.train_labels == c]
    y = (ds.test_labels != c).astype(int)
    cal, out, times = _parts(normal, ds.test_images, seed, overrides)
    stats = score_stats(cal)
    auc = {k: float(roc_auc_score(y, out[k])) for k in SINGLES}
    for combo in COMBOS:
        names = combo.split("+")
        auc[combo] = float(roc_auc_score(y, combine_scores({n: out[n] for n in names}, stats)))
    px_bank, px_test = flatten_images(normal), flatten_images(ds.test_images)
    auc["pixel kNN"] = float(
        roc_auc_score(y, KNNDistance(5).fit(px_bank).decision_function(px_test))
    )
    pca = PCAReconstruction(random_state=seed).fit(px_bank)
    auc["PCA"] = float(roc_auc_score(y, pca.decision_function(px_test)))
    return {"dataset": ds.name, "class": c, "seed": seed, "n_train": int(len(normal)),
            "n_calibration": int(len(cal["mse"])), "auroc": auc, "fit_seconds": times}  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per candidate: mean AUROC over classes (then over seeds) and its worst class against
    the better of pixel kNN and PCA (class AUROCs averaged over seeds first)."""
    keys = list(rows[0]["auroc"])
    classes = sorted({r["class"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})

    def cls_mean(k: str, c: int) -> float:
        return float(np.mean([r["auroc"][k] for r in rows if r["class"] == c]))

    out = {}
    for k in keys:
        per_seed = [np.mean([r["auroc"][k] for r in rows if r["seed"] == s]) for s in seeds]
        worst = min(
            cls_mean(k, c) - max(cls_mean("pixel kNN", c), cls_mean("PCA", c)) for c in classes
        )
        out[k] = {"mean": float(np.mean(per_seed)), "per_seed": [float(v) for v in per_seed],
                  "worst_vs_baselines": float(worst)}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--datasets", default=",".join(SMALL_SETS), help="comma-separated")
    p.add_argument("--classes", default="", help="comma-separated class indices (default all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the detectors")
    p.add_argument("--merge", default="", metavar="A.json,B.json",
                   help="run nothing: join earlier runs' results files into --out")  # fmt: skip
    add_arguments(p, "anomaly_smallset_screen")
    args = p.parse_args()
    if args.merge:
        _merge([x.strip() for x in args.merge.split(",") if x.strip()], args.out)
        return
    overrides: dict[str, Any] = {}
    if args.smoke:
        args.datasets, args.classes, args.seeds, overrides = "digits", "0,1", "0", dict(SMOKE)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n.strip() for n in args.datasets.split(",")]
    unknown = sorted(set(names) - set(LOADERS))
    if unknown:
        raise SystemExit(f"unknown data set(s) {unknown}; choose from {', '.join(LOADERS)}")

    results, summary, rows_out = [], {}, []
    for name in names:
        ds = LOADERS[name]("validation")
        classes = ([int(c) for c in args.classes.split(",")] if args.classes
                   else list(range(len(ds.class_names))))  # fmt: skip
        mine = []
        for s in seeds:
            for c in classes:
                mine.append(run_class(ds, c, s, overrides))
                _print_row(mine[-1])
        results += mine
        summary[name] = summarise(mine)
        rows_out += _print_summary(name, summary[name], seeds)
    write_results(args.out, "anomaly_smallset_screen", mode_of(args),
                  tables={"screen": table(COLUMNS, rows_out)},
                  data={"args": vars(args), "overrides": overrides, "results": results,
                        "summary": summary})  # fmt: skip


def _print_row(r: dict[str, Any]) -> None:
    a = r["auroc"]
    best = max(a, key=a.get)
    print(f"  {r['dataset']} class {r['class']} seed {r['seed']}: mse {100 * a['mse']:.1f}  "
          f"pixel {100 * a['pixel']:.1f}  mse+pixel {100 * a['mse+pixel']:.1f}  best {best} "
          f"{100 * a[best]:.1f}  (fit {r['fit_seconds']['plain']:.0f}s + "
          f"{r['fit_seconds']['head']:.0f}s)", flush=True)  # fmt: skip


COLUMNS = ["data set (validation)", "score", "mean AUROC %",
           "worst class - better of pixel kNN and PCA"]  # fmt: skip


def _print_summary(name: str, summ: dict[str, Any], seeds: list[int]) -> list[list[str]]:
    """Print the candidates best first; the table rows."""
    print(f"\n{name} (validation), seeds {seeds}: mean AUROC %, worst class vs the better "
          "of pixel kNN and PCA")  # fmt: skip
    rows = []
    for k, v in sorted(summ.items(), key=lambda kv: -kv[1]["mean"]):
        print(f"  {k:<36} {100 * v['mean']:6.2f}  {100 * v['worst_vs_baselines']:+6.2f}")
        rows.append([f"{name}, seeds {','.join(map(str, seeds))}", k, f"{100 * v['mean']:.2f}",
                     f"{100 * v['worst_vs_baselines']:+.2f}"])  # fmt: skip
    return rows


def _merge(inputs: list[str], out: str) -> None:
    """Several runs as one results file: their rows, tables and the commands that made them.

    A run that wrote outside the repository is named by its file name alone
    (``<outside>/NAME``): a folder of one machine means nothing on another.
    """
    results, parts, folders = [], [], set()
    for path in inputs:
        if Path(path).resolve() == Path(out).resolve():
            raise SystemExit(f"--out {out} is one of the --merge inputs: write to a new file")
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        results += record["data"]["results"]
        prov = record["provenance"]
        name = Path(path).resolve()
        shown = name.relative_to(REPO).as_posix() if name.is_relative_to(REPO) else name.name
        folder = str(Path(path).resolve().parent)
        folders.add(folder)
        parts.append({"file": shown, "commit": prov["commit"], "dirty": prov["dirty"],
                      "date": prov["date"],
                      "command": prov["command"].replace(folder, "<outside>")})  # fmt: skip
    summary, rows_out = {}, []
    for name in dict.fromkeys(r["dataset"] for r in results):
        mine = [r for r in results if r["dataset"] == name]
        summary[name] = summarise(mine)
        rows_out += _print_summary(name, summary[name], sorted({r["seed"] for r in mine}))
    # The merge's own command names its inputs the same way.
    for folder in folders - {str(REPO)}:
        sys.argv = [a.replace(folder, "<outside>") for a in sys.argv]
    write_results(out, "anomaly_smallset_screen", "full",
                  tables={"screen": table(COLUMNS, rows_out)},
                  data={"parts": parts, "results": results, "summary": summary})  # fmt: skip


if __name__ == "__main__":
    main()
