"""Speed of aelab's EquilibriumKMeans against sklekmeans' EKMeans and scikit-learn's KMeans.

Same data, same process, median of 3 fits, n_init=1 for all three. Two columns of
whole-fit times:

- "given start": all three start from the same centroids (scikit-learn's
  k-means++ on X, passed as ``init``), so the time is validation + iterations +
  final labels, and per-iteration time is fit time / ``n_iter_``.
- "own init": each estimator seeds itself with k-means++ (random_state=0).

    python benchmarks/ekm_speed.py            # 100k x 32 and 20k x 1024, K = 10
    python benchmarks/ekm_speed.py --quick    # 20k x 32 and 4k x 512

sklekmeans is only needed here (``pip install sklekmeans`` or ``.[bench]``).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sets")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--skip-sklekmeans", action="store_true", help="it takes ~1 min per set (300 iterations)"
    )
    args = ap.parse_args()
    shapes = [(20_000, 32), (4_000, 512)] if args.quick else [(100_000, 32), (20_000, 1024)]
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
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]:.2f} | {r[5]} | {r[6]:.2f} | {r[7]:.2f} | {r[8]:.3f} "
            f"| {r[9]:.3f} | {r[10]:.2f} | {r[11]:.3f} |"
        )
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
