"""Clustering quality of aelab's EquilibriumKMeans against KMeans, GaussianMixture and sklekmeans.

ARI, NMI and accuracy (Hungarian matching) on the paper's Data-A to D
(z-scored, fresh draws), imbalanced blobs 2000:100:100 (std 1, centres 4
apart, raw), and scikit-learn's iris, wine, breast cancer and digits
(z-scored). Each method keeps the best of ``n_init`` starts by its own
objective. Draw d uses data seed d and estimator seed d.

    python benchmarks/ekm_quality.py            # 5 draws / seeds
    python benchmarks/ekm_quality.py --quick    # 2
    python benchmarks/ekm_quality.py --smoke --out /tmp/smoke.json   # seconds: 2 sets, 1 draw, 1 start

sklekmeans is only needed here (``pip install sklekmeans`` or ``.[bench]``).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_digits, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score, confusion_matrix, normalized_mutual_info_score
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from _results import add_arguments, mode_of, table, write_results
from aelab.clustering import (
    EquilibriumKMeans,
    MiniBatchEquilibriumKMeans,
    make_imbalanced_blobs,
    make_paper_data,
)

try:
    from sklekmeans import EKMeans
except ImportError:  # pragma: no cover - optional
    EKMeans = None


def accuracy(y, labels):
    """Best one-to-one matching of clusters to classes (Hungarian)."""
    cm = confusion_matrix(y, labels)
    r, c = linear_sum_assignment(-cm)
    return cm[r, c].sum() / len(y)


def datasets(draw):
    for name in "ABCD":
        X, y = make_paper_data(name, random_state=draw, standardize=True)
        yield f"Data-{name}", X, y
    X, y = make_imbalanced_blobs((2000, 100, 100), random_state=draw)
    yield "blobs 2000:100:100", X, y
    for name, loader in [
        ("iris", load_iris),
        ("wine", load_wine),
        ("breast cancer", load_breast_cancer),
        ("digits", load_digits),
    ]:
        X, y = loader(return_X_y=True)
        yield name, StandardScaler().fit_transform(X), y


def methods(k, seed, n_init):
    m = {
        "aelab EKM": lambda: EquilibriumKMeans(k, n_init=n_init, random_state=seed),
        "aelab EKM fixed-point": lambda: EquilibriumKMeans(
            k, n_init=n_init, update="fixed-point", random_state=seed
        ),
        "aelab MB-EKM": lambda: MiniBatchEquilibriumKMeans(k, n_init=n_init, random_state=seed),
        "KMeans": lambda: KMeans(k, n_init=n_init, random_state=seed),
        "GMM": lambda: GaussianMixture(k, n_init=3, random_state=seed),
    }
    if EKMeans is not None:
        m["sklekmeans"] = lambda: EKMeans(k, n_init=n_init, random_state=seed)
    return m


SMOKE_SETS = ("Data-A", "iris")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 draws instead of 5")
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--n-init", type=int, default=10)
    add_arguments(ap, "ekm_quality")
    args = ap.parse_args()
    draws = args.draws or (2 if args.quick else 5)
    if args.smoke:
        draws, args.n_init = 1, 1
    scores: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    secs: dict[str, float] = {}
    order: list[str] = []
    for draw in range(draws):
        for set_name, X, y in datasets(draw):
            if args.smoke and set_name not in SMOKE_SETS:
                continue
            if set_name not in order:
                order.append(set_name)
            k = len(np.unique(y))
            for mname, make in methods(k, draw, args.n_init).items():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    warnings.simplefilter("ignore", RuntimeWarning)
                    t = time.perf_counter()
                    labels = make().fit_predict(X)
                    secs[mname] = secs.get(mname, 0.0) + time.perf_counter() - t
                scores.setdefault((set_name, mname), []).append(
                    (
                        adjusted_rand_score(y, labels),
                        normalized_mutual_info_score(y, labels),
                        accuracy(y, labels),
                    )
                )
    mnames = list(methods(2, 0, 1))
    tables = {}
    for i, metric in enumerate(("ARI", "NMI", "accuracy")):
        tables[metric.lower()] = table(
            ["data", *mnames],
            [
                [s, *(f"{np.mean([v[i] for v in scores[(s, m)]]):.3f}" for m in mnames)]
                for s in order
            ],
        )
        print(f"\n{metric} (mean over {draws} draws/seeds, n_init={args.n_init})\n")
        print("| data | " + " | ".join(mnames) + " |")
        print("|---|" + "---|" * len(mnames))
        for s in order:
            cells = [f"{np.mean([v[i] for v in scores[(s, m)]]):.3f}" for m in mnames]
            print(f"| {s} | " + " | ".join(cells) + " |")
    print("\nfit time over all sets (s): " + ", ".join(f"{m} {secs[m]:.1f}" for m in mnames))
    ari = {key: np.mean([v[0] for v in val]) for key, val in scores.items()}
    write_results(args.out, "ekm_quality", mode_of(args), tables=tables,
                  data={"draws": draws, "n_init": args.n_init, "fit_seconds": secs,
                        "sklekmeans": EKMeans is not None})  # fmt: skip
    if args.smoke:
        return
    print("\ntargets:")
    print(f"  Data-A ARI >= 0.96: {ari[('Data-A', 'aelab EKM')]:.3f}")
    print(f"  Data-A mini-batch ARI >= 0.90: {ari[('Data-A', 'aelab MB-EKM')]:.3f}")
    print(f"  blobs 2000:100:100 ARI >= 0.43: {ari[('blobs 2000:100:100', 'aelab EKM')]:.3f}")
    if EKMeans is not None:
        worst = min(order, key=lambda s: ari[(s, "aelab EKM")] - ari[(s, "sklekmeans")])
        gap = ari[(worst, "aelab EKM")] - ari[(worst, "sklekmeans")]
        print(
            f"  never more than 0.01 below sklekmeans: worst set {worst}, aelab - sklekmeans = {gap:+.3f}"
        )
        for s in order:
            d = ari[(s, "aelab EKM")] - ari[(s, "sklekmeans")]
            if d < -0.01:
                print(f"    below on {s}: {d:+.3f}")


if __name__ == "__main__":
    main()
