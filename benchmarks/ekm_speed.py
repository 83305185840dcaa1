"""Speed of aelab's EquilibriumKMeans against sklekmeans' EKMeans and scikit-learn's KMeans.

Steady state: same data, same process, median of 3 fits, n_init=1 for all three.
Two columns of whole-fit times:

- "given start": all three start from the same centroids (scikit-learn's
  k-means++ on X, passed as ``init``), so the time is validation + iterations +
  final labels, and per-iteration time is fit time / ``n_iter_``.
- "own init": each estimator seeds itself with k-means++ (random_state=0).

Start-up: what a user who clusters once pays. Each of ``--repeats`` fresh
Python processes times ``import aelab.clustering``, then
``from aelab.clustering import EquilibriumKMeans``, then two
``EquilibriumKMeans(10, random_state=0).fit(X)`` (the defaults: n_init=10) on
the same float64 data, and reports the first fit over the second (scikit-learn's
KMeans, n_init=10, measured the same way, is the comparison). Medians over the
processes.

    python benchmarks/ekm_speed.py            # 100k x 32 and 20k x 1024, K = 10
    python benchmarks/ekm_speed.py --quick    # 20k x 32 and 4k x 512
    python benchmarks/ekm_speed.py --startup-only --repeats 5
    python benchmarks/ekm_speed.py --smoke --out /tmp/smoke.json   # seconds: 2000 x 16, one repeat

sklekmeans is only needed here (``pip install sklekmeans`` or ``.[bench]``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from _results import add_arguments, mode_of, table, write_results
from aelab.clustering import EquilibriumKMeans

try:
    from sklekmeans import EKMeans
except ImportError:  # pragma: no cover - optional
    EKMeans = None


def _median_fit(make, X, repeats):
    times, est = [], None
    for _ in range(repeats):
        est = make()
        t = time.perf_counter()
        est.fit(X)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), est


# Run in a fresh interpreter: argv = data file, module, estimator class, constructor kwargs (JSON).
_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import importlib
mod = importlib.import_module(sys.argv[2])
t1 = time.perf_counter()
Est = getattr(mod, sys.argv[3])
t2 = time.perf_counter()
import warnings
import numpy as np
X = np.load(sys.argv[1])
kw = json.loads(sys.argv[4])
fits = []
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _ in range(2):
        t = time.perf_counter()
        Est(**kw).fit(X)
        fits.append(time.perf_counter() - t)
print(json.dumps({"import": t1 - t0, "attr": t2 - t1, "first": fits[0], "second": fits[1]}))
"""

_STARTUP = {
    # name: (module imported first, class, constructor kwargs)
    "aelab EKM": ("aelab.clustering", "EquilibriumKMeans", {"n_clusters": 10, "random_state": 0}),
    "KMeans": ("sklearn.cluster", "KMeans", {"n_clusters": 10, "n_init": 10, "random_state": 0}),
}


def _startup_rows(shapes: list[tuple[int, int]], repeats: int) -> list[tuple]:
    """Median start-up times, each repeat in a fresh ``python`` process."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, d in shapes:
            X, _ = make_blobs(n_samples=n, n_features=d, centers=10, random_state=0)
            path = Path(tmp) / f"X_{n}x{d}.npy"
            np.save(path, np.ascontiguousarray(X))
            for name, (module, cls, kw) in _STARTUP.items():
                runs = []
                for _ in range(repeats):
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, str(path), module, cls, json.dumps(kw)],
                        capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
                ratios = [r["first"] / r["second"] for r in runs]
                rows.append((f"{n}x{d}", name, f"import {module}", med, ratios))
    return rows


def _print_startup(rows: list[tuple], repeats: int) -> dict[str, object]:
    """Print the start-up table; return it as a results table."""
    print(f"Start-up, float64, each of {repeats} run(s) in a fresh process (medians):\n")
    hdr = ("data", "estimator", "import s", "class s", "1st fit s", "2nd fit s", "1st / 2nd")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    cells = []
    for data, name, _, m, ratios in rows:
        span = f"{min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else f"{ratios[0]:.2f}"
        cells.append([data, name, f"{m['import']:.3f}", f"{m['attr']:.3f}", f"{m['first']:.3f}",
                      f"{m['second']:.3f}", span])  # fmt: skip
        print("| " + " | ".join(cells[-1]) + " |")
    print()
    for data, name, what, m, ratios in rows:
        if name == "aelab EKM":
            print(
                f"aelab EKM {data}: {what} {m['import']:.2f} s (target < 0.5), first fit "
                f"{m['first'] / m['second']:.2f}x the second (target <= 1.5; range "
                f"{min(ratios):.2f}-{max(ratios):.2f}), import + class + first fit "
                f"{(m['import'] + m['attr'] + m['first']) / m['second']:.2f}x the second"
            )
    print()
    return table(list(hdr), cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sets")
    ap.add_argument(
        "--repeats", type=int, default=3, help="fits per median, and fresh start-up processes"
    )
    ap.add_argument(
        "--skip-sklekmeans", action="store_true", help="it takes ~1 min per set (300 iterations)"
    )
    ap.add_argument(
        "--startup-only", action="store_true", help="only the fresh-process start-up table"
    )
    add_arguments(ap, "ekm_speed")
    args = ap.parse_args()
    shapes = [(20_000, 32), (4_000, 512)] if args.quick else [(100_000, 32), (20_000, 1024)]
    if args.smoke:
        shapes, args.repeats = [(2_000, 16)], 1
    tables = {"startup": _print_startup(_startup_rows(shapes, args.repeats), args.repeats)}
    if args.startup_only:
        write_results(args.out, "ekm_speed", mode_of(args), tables=tables)
        return
    K = 10
    rows = []
    f64_time = {}
    for n, d in shapes:
        X64, y = make_blobs(n_samples=n, n_features=d, centers=K, random_state=0)
        for dtype in (np.float64, np.float32):
            X = np.ascontiguousarray(X64.astype(dtype))
            C0, _ = kmeans_plusplus(X, K, random_state=0)
            C0 = C0.astype(np.float64)
            cands = {
                "KMeans": lambda C0=C0: KMeans(K, init=C0, n_init=1),
                "aelab EKM": lambda C0=C0: EquilibriumKMeans(K, init=C0, n_init=1),
            }
            own = {
                "KMeans": lambda: KMeans(K, n_init=1, random_state=0),
                "aelab EKM": lambda: EquilibriumKMeans(K, n_init=1, random_state=0),
            }
            if EKMeans is not None and not args.skip_sklekmeans:
                cands["sklekmeans"] = lambda C0=C0: EKMeans(K, init=C0, n_init=1)
                own["sklekmeans"] = lambda: EKMeans(K, n_init=1, random_state=0)
            res = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                for name, make in cands.items():
                    reps = 1 if name == "sklekmeans" else args.repeats
                    t, est = _median_fit(make, X, reps)
                    t_own, est_own = _median_fit(own[name], X, reps)
                    res[name] = (
                        t,
                        int(est.n_iter_),
                        adjusted_rand_score(y, est.labels_),
                        t_own,
                        adjusted_rand_score(y, est_own.labels_),
                    )
            km = res["KMeans"]
            for name, (t, it, ari, t_own, ari_own) in res.items():
                per = t / max(it, 1)
                rows.append(
                    (
                        f"{n}x{d}",
                        np.dtype(dtype).name,
                        name,
                        t,
                        t / km[0],
                        it,
                        per * 1e3,
                        per / (km[0] / km[1]),
                        ari,
                        t_own,
                        t_own / km[3],
                        ari_own,
                    )
                )
                if name == "aelab EKM":
                    f64_time.setdefault((n, d), {})[np.dtype(dtype).name] = t
    hdr = (
        "data",
        "dtype",
        "estimator",
        "fit s",
        "x KMeans",
        "iters",
        "ms/iter",
        "iter x KM",
        "ARI",
        "own-init s",
        "x KMeans",
        "ARI",
    )
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    cells = []
    for r in rows:
        cells.append([r[0], r[1], r[2], f"{r[3]:.3f}", f"{r[4]:.2f}", str(r[5]), f"{r[6]:.2f}",
                      f"{r[7]:.2f}", f"{r[8]:.3f}", f"{r[9]:.3f}", f"{r[10]:.2f}", f"{r[11]:.3f}"])  # fmt: skip
        print("| " + " | ".join(cells[-1]) + " |")
    tables["fit"] = table(list(hdr), cells)
    write_results(args.out, "ekm_speed", mode_of(args), tables=tables,
                  data={"repeats": args.repeats, "sklekmeans": EKMeans is not None
                        and not args.skip_sklekmeans})  # fmt: skip
    print()
    for (n, d), t in f64_time.items():
        print(
            f"aelab EKM {n}x{d}: float32 is {t['float64'] / t['float32']:.2f}x faster than float64 (given start)"
        )
    sk = [r for r in rows if r[2] == "sklekmeans"]
    ae = {(r[0], r[1]): r for r in rows if r[2] == "aelab EKM"}
    for r in sk:
        a = ae[(r[0], r[1])]
        print(
            f"{r[0]} {r[1]}: aelab EKM is {r[3] / a[3]:.0f}x faster than sklekmeans (ARI {a[8]:.3f} vs {r[8]:.3f})"
        )


if __name__ == "__main__":
    main()
